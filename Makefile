# vmshift: two commands matter: `make demo` and `make test`. Each installs what it needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Built images, the simulator binary and other caches live outside the repository.
export VMSHIFT_CACHE ?= /var/cache/vmshift
# KVM aborts under nesting here; libguestfs must use TCG (see doctor).
export LIBGUESTFS_BACKEND ?= direct

DEBS := qemu-utils qemu-system-x86 libguestfs-tools python3-guestfs linux-image-amd64 \
	libvirt-daemon-system libvirt-clients libvirt-dev pkg-config python3-dev python3-venv \
	gcc libc6-dev libnbd-bin nbdkit ovmf python3-hivex libhivex-bin debootstrap busybox-static \
	golang-go golang-github-vmware-govmomi-dev virt-v2v glusterfs-server glusterfs-client \
	iproute2 libxml2-utils zstd cpio openssl ntfs-3g dosfstools psmisc procps util-linux \
	kmod e2fsprogs git make curl cryptsetup-bin swtpm swtpm-tools xorriso \
	chromium-headless-shell

STAMP := $(VENV)/.setup-done

.PHONY: setup test bench demo lint clean-venv
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@missing=$$(dpkg-query -W -f='$${Package} $${db:Status-Status}\n' $(DEBS) 2>/dev/null \
		| awk '$$2!="installed"{print $$1}'; for p in $(DEBS); do \
		dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done | sort -u); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $(DEBS); \
	else echo "setup: Debian packages present"; fi
	@# guestfs and hivex exist only as Debian's python3 bindings: hence /usr/bin/python3
	@# and --system-site-packages.
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@# compat: a plain path in a .pth; the default editable finder costs ~15 ms per start.
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' \
		--config-settings editable_mode=compat
	@# Bytecode, as a packaged install has it: an editable install compiles
	@# nothing, and with PYTHONDONTWRITEBYTECODE every run recompiled ~20 ms.
	$(PY) -m compileall -q vmshift
	$(PY) -c "import guestfs, hivex, libvirt, lxml, pyVmomi, click, tqdm"
	mkdir -p $(VMSHIFT_CACHE)
	touch $(STAMP)

test: setup
	$(VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks

demo: setup
	$(PY) -m vmshift.demo

lint: setup
	$(VENV)/bin/ruff check vmshift tests benchmarks

clean-venv:
	rm -rf $(VENV)
