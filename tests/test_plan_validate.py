"""`vmshift plan validate` and `plan template`: every problem of a plan in one run,
each on its own line with the right physical line number; spreadsheet exports
read as they are; live checks against a libvirt test-driver host."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.cli_support import UNREACHABLE, libvirt_test_host, vmshift
from vmshift.plan.csvio import format_csv, records
from vmshift.plan.schema import COLUMNS

A, B = "qemu+ssh://kvm-a/system", "qemu+ssh://kvm-b/system"
VC = "vsphere://vc.example.com"
HEADER = [*COLUMNS, "colour"]


def row(**cells: str) -> list[str]:
    return [cells.get(c, "") for c in HEADER]


def live(vm: str, **cells: str) -> list[str]:
    return row(**{"wave": "2", "vm": vm, "source": A, "type": "live", "target": B, **cells})


def v2v(vm: str, **cells: str) -> list[str]:
    return row(**{"wave": "1", "vm": vm, "source": f"{VC}/{vm}", "type": "v2v", "target": A,
                  "target_pool": "default", **cells})


# One row per mistake (two on line 7); the comment is each row's first line.
MISTAKES = [
    v2v("web01", source="vsphere://admin:secret@vc.example.com/web01"),  # 2
    v2v("web02", type="teleport"),  # 3
    v2v("web03", network_map="missing.map"),  # 4
    v2v("web04", network_map="nets.map", format="qcow3"),  # 5
    v2v("web05", bandwidth="fast"),  # 6
    live("db01", max_downtime="-5", policy="turbo"),  # 7
    live("db02", window_start="2025-03-01T22:00:00"),  # 8
    live("db03", window_start="2025-03-02T04:00:00+01:00",
         window_end="2025-03-01T22:00:00+01:00"),  # 9
    live("db01", type="offline"),  # 10
    row(wave="3", vm="db04", source=A, type="storage"),  # 11
    live("db05", priority="high", notes="a note\nspanning\nlines"),  # 12-14
    live("db06", target=A),  # 15
    live("db07", depends_on="9"),  # 16
    v2v("db08", source="/vms/nothere.vmx"),  # 17
    v2v("db09", source=A, target=B),  # 18
    live("db10", wave="5", depends_on="6"),  # 19
    live("db11", wave="6", depends_on="5"),  # 20
    live("db12", wave=""),  # 21
    live("db13", type="offline", network_map="VM Network=default,oops"),  # 22
    live("db14", type="offline", policy="adaptive"),  # 23
    live("db15")[:5],  # 24
    live("db16", target="qemu+ssh://root:pw@kvm-b/system"),  # 25
    live("db17", wave="wave 1"),  # 26
]

EXPECTED = """\
1: colour: unknown column (the columns are {columns}; --allow-extra-columns keeps others)
2: source: credentials in a vsphere:// source are refused (they come from a profile, never \
from the plan)
3: type: unknown type 'teleport' (expected v2v, live, offline, suspended, storage)
4: network_map: no map file 'missing.map' (an inline map is SRC=DST[,SRC=DST...])
5: format: unknown format 'qcow3' (expected qcow2, raw)
6: bandwidth: 'fast' is not a bandwidth (e.g. 100M, 1G, 512K per second; a bare number is MiB/s)
7: max_downtime: '-5' is not a downtime in milliseconds (a whole number > 0)
7: policy: unknown policy 'turbo' (expected fixed, nova, adaptive)
8: window_start: '2025-03-01T22:00:00' has no UTC offset (add one: +01:00, Z)
9: window_end: the window ends (2025-03-01T22:00:00+01:00) before it starts \
(2025-03-02T04:00:00+01:00)
10: vm: 'db01' from qemu+ssh://kvm-a/system is already planned on line 7
11: target_pool: a storage row needs a target_pool
12: priority: 'high' is not a priority (a whole number)
15: target: the target is the source host
16: depends_on: no wave '9' in the plan
17: source: no VMX file '/vms/nothere.vmx'
18: type: v2v converts from a VMX file or vSphere; this source is a libvirt host (use live, \
offline, suspended or storage)
19: depends_on: dependency cycle: wave 5 -> 6 -> 5
21: wave: empty
22: network_map: entry 2: expected SRC=DST, found 'oops'
23: policy: policy applies to live migrations only
24: 5 cells, the header has 17
25: target: a password in the URI is refused (use SSH keys or TLS certificates)
26: wave: 'wave 1' is not a wave name (letters, digits, '.', '_', '-')
""".format(columns=", ".join(COLUMNS))


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    (tmp_path / "nets.map").write_text("VM Network = default\n")
    return tmp_path


def test_every_mistake_is_reported_with_its_line_in_one_run(plan_dir: Path) -> None:
    path = plan_dir / "plan.csv"
    path.write_text(format_csv(HEADER, MISTAKES))
    res = vmshift("plan", "validate", "--offline", str(path))
    assert res.rc == 2 and res.out == ""
    expected = [f"vmshift: error: {path}:{line}" for line in EXPECTED.splitlines()]
    assert res.err.splitlines() == expected
    kinds = {re.sub(r"'[^']*'|\d+", "_", ln.split(": ", 1)[1]) for ln in EXPECTED.splitlines()}
    assert len(kinds) >= 15

    doc = vmshift("plan", "validate", "--offline", "--json", str(path)).doc()
    assert doc["kind"] == "plan_validate" and doc["outcome"] == "bad_input"
    assert [f"{p['line']}: {p['column']}: {p['message']}" if p["column"] else
            f"{p['line']}: {p['message']}" for p in doc["problems"]] == EXPECTED.splitlines()


def test_extra_columns_are_kept_when_allowed(plan_dir: Path) -> None:
    path = plan_dir / "plan.csv"
    path.write_text(format_csv(HEADER, [v2v("web01", colour="blue")]))
    assert vmshift("plan", "validate", "--offline", str(path)).rc == 2
    res = vmshift("plan", "validate", "--offline", "--allow-extra-columns", str(path))
    assert res.rc == 0, res.err
    assert res.out == (f"{path}: 1 VMs in 1 waves, no problems "
                       "(offline: hosts, domains and pools not checked)\n")


def test_a_spreadsheet_export_validates_clean(plan_dir: Path) -> None:
    """What a spreadsheet in a decimal-comma locale writes: BOM, CRLF, semicolons,
    quoted cells with the delimiter and line breaks in them, columns in its own order."""
    (plan_dir / "vms").mkdir()
    (plan_dir / "vms" / "app.vmx").write_text('displayName = "app"\n')
    header = ["vm", "wave", "type", "source", "target", "target_pool", "network_map", "notes",
              "window_start", "window_end", "depends_on"]
    lines = [header,
             ["app", "1", "v2v", "vms/app.vmx", A, "default", "nets.map",
              "moved first;\r\nsee ticket 42", "2025-03-01T22:00Z", "2025-03-02T04:00Z", ""],
             ["db01", "2", "live", A, B, "", "VM Network=default,DMZ=bridge:br-dmz",
              'says "go"', "", "", "1"]]
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=";", lineterminator="\r\n").writerows(lines)
    path = plan_dir / "export.csv"
    path.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode())
    res = vmshift("plan", "validate", "--offline", "--json", str(path))
    assert res.rc == 0, res.err
    doc = res.doc()
    assert (doc["rows"], doc["waves"], doc["problems"], doc["outcome"]) == (2, ["1", "2"], [],
                                                                            "ok")
    # The same file with a mistake on its last row: the line counts the quoted line break.
    broken = out.getvalue().replace("live", "lve")
    path.write_bytes(b"\xef\xbb\xbf" + broken.encode())
    res = vmshift("plan", "validate", "--offline", str(path))
    assert res.err == (f"vmshift: error: {path}:4: type: unknown type 'lve' "
                       "(expected v2v, live, offline, suspended, storage)\n")


def test_the_template_validates(tmp_path: Path) -> None:
    res = vmshift("plan", "template")
    assert res.rc == 0 and res.out.startswith(",".join(COLUMNS) + "\n")
    path = tmp_path / "template.csv"
    path.write_text(res.out)
    check = vmshift("plan", "validate", "--offline", str(path))
    assert check.rc == 0, check.err
    assert check.out.startswith(f"{path}: 6 VMs in 3 waves, no problems")
    types = {r["type"] for r in csv.DictReader(io.StringIO(res.out))}
    assert types == {"v2v", "live", "offline", "suspended", "storage"}
    doc = vmshift("plan", "template", "--json").doc()
    assert doc["kind"] == "plan_template" and doc["csv"] == res.out


def test_live_checks_find_unreachable_hosts_missing_domains_and_pools(tmp_path: Path) -> None:
    host = libvirt_test_host(tmp_path)  # domain vm1; pools a and b
    path = tmp_path / "plan.csv"
    rows = [row(wave="1", vm="vm1", source=host, type="storage", target_pool="b"),
            row(wave="1", vm="vm1", source=host, type="offline", target=UNREACHABLE),
            row(wave="2", vm="ghost", source=host, type="storage", target_pool="nopool")]
    path.write_text(format_csv(list(COLUMNS), [r[:-1] for r in rows]))
    res = vmshift("plan", "validate", str(path))
    assert res.rc == 2
    assert res.err.splitlines() == [
        f"vmshift: error: {path}:3: vm: 'vm1' from {host} is already planned on line 2",
        f"vmshift: error: {path}:3: target: cannot connect to {UNREACHABLE}: unable to "
        "connect to server at '127.0.0.1:1': Connection refused",
        f"vmshift: error: {path}:4: vm: no domain 'ghost' on {host}",
        f"vmshift: error: {path}:4: target_pool: no pool 'nopool' on {host}"]
    path.write_text(format_csv(list(COLUMNS), [rows[0][:-1]]))
    res = vmshift("plan", "validate", "--json", str(path))
    assert res.rc == 0, res.err
    assert res.doc()["live_checked"] is True


def test_unreadable_plans_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    res = vmshift("plan", "validate", str(missing))
    assert res.rc == 2
    assert res.err == (f"vmshift: error: {missing}: cannot read the plan CSV file: "
                       "No such file or directory\n")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(b"wave,vm\n1,caf\xe9\n")
    res = vmshift("plan", "validate", str(latin))
    assert res.err == (f"vmshift: error: {latin}:2: not UTF-8 text "
                       "(export the sheet as CSV UTF-8)\n")


CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=12)


def _header(rows: list[list[str]]) -> list[str]:
    return ["wave", "vm"] + [f"c{i}" for i in range(max(map(len, rows)) - 2)]


def _starts(lines: list[str]) -> list[int]:
    """The line each of these serialised records starts on."""
    starts, line = [], 1
    for chunk in lines:
        starts.append(line)
        line += len(re.findall(r"\r\n|\r|\n", chunk))
    return starts


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(CELL, min_size=2, max_size=4), min_size=1, max_size=5),
       st.sampled_from([",", ";"]), st.sampled_from(["\n", "\r\n"]),
       st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
def test_records_read_any_spreadsheet_csv(rows: list[list[str]], delimiter: str,
                                          newline: str, quoting: int) -> None:
    """Any cell text (delimiters, quotes, line breaks) reads back as a spreadsheet
    wrote it, and each record's line is where it starts in the file."""
    assume(all(any(c.strip() for c in r) for r in rows))  # blank rows are skipped
    # csv quotes only the terminator's characters: a bare CR under LF ends would
    # make an unreadable file, which no spreadsheet writes.
    assume(quoting == csv.QUOTE_ALL or newline == "\r\n"
           or not any("\r" in c for r in rows for c in r))
    chunks = []
    for record in [_header(rows), *rows]:
        out = io.StringIO(newline="")
        csv.writer(out, delimiter=delimiter, lineterminator=newline,
                   quoting=quoting).writerow(record)
        chunks.append(out.getvalue())
    found = list(records("".join(chunks)))
    assert [r.cells for r in found] == [_header(rows), *rows]
    assert [r.line for r in found] == _starts(chunks)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(CELL, min_size=2, max_size=4), min_size=1, max_size=5))
def test_written_plans_read_back(rows: list[list[str]]) -> None:
    """What import-rvtools and template write reads back cell for cell (line breaks
    in a cell as LF)."""
    assume(all(any(c.strip() for c in r) for r in rows))
    found = [r.cells for r in records(format_csv(_header(rows), rows))]
    normalised = [[re.sub(r"\r\n?", "\n", c) for c in r] for r in rows]
    assert found == [_header(rows), *normalised]
