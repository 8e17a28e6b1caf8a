// vmshift's vCenter simulator: govmomi's simulator engine (Debian's
// golang-github-vmware-govmomi-dev) behind real TLS on loopback, with an
// inventory shaped so that vmshift's vSphere reader meets the facts it must
// handle: powered-on and powered-off VMs, EFI with secure boot, CPU topology,
// hot-add, CBT, vTPM, PCI passthrough, a serial port, USB, a snapshot, CPU affinity and a DRS rule.
//
// Built by vmshift/testbed/vcsim.py with GOPATH=/usr/share/gocode GO111MODULE=off.
// The password comes from the environment (VCSIM_PASSWORD), never argv, so it
// does not show up in `ps`.
//
// Protocol with the Python side: one line per fact on stdout, then
// "VCSIM_READY". The process stops on SIGTERM/SIGINT, or when stdin reaches
// EOF with -exit-on-eof (so a crashed test run leaves no simulator behind).
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	cert := flag.String("cert", "", "PEM server certificate (chain)")
	key := flag.String("key", "", "PEM server private key")
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on")
	exitOnEOF := flag.Bool("exit-on-eof", false, "exit when stdin is closed")
	flag.Parse()
	// Catch signals before anything else: a stop that arrives while the
	// inventory is being built must still remove the datastore directories.
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	user := os.Getenv("VCSIM_USER")
	pass := os.Getenv("VCSIM_PASSWORD")
	if user == "" || pass == "" || *cert == "" || *key == "" {
		log.Fatal("VCSIM_USER, VCSIM_PASSWORD, -cert and -key are required")
	}
	// The simulator logs every SOAP call; keep stderr for real errors
	// unless VCSIM_LOG=1 asks for the trace (it goes to the run dir's vcsim.log).
	if os.Getenv("VCSIM_LOG") == "" {
		log.SetOutput(ioutil.Discard)
	}

	if host, _, err := net.SplitHostPort(*listen); err != nil || !net.ParseIP(host).IsLoopback() {
		fatal("-listen %q: only a loopback address is allowed", *listen)
	}

	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		fatal("loading certificate: %v", err)
	}

	model := simulator.VPX()
	// Advertise 6.7 so clients negotiate a version that knows VirtualTPM
	// (the default 6.5 makes a vTPM decode as a bare VirtualDevice).
	model.ServiceContent.About.ApiVersion = "6.7"
	model.Host = 1        // one standalone host ...
	model.ClusterHost = 2 // ... and a two-host cluster
	model.Machine = 2     // per resource pool: 2 on the standalone host, 2 in the cluster
	if err := model.Create(); err != nil {
		fatal("creating the inventory: %v", err)
	}
	cleanup = model.Remove // the datastores' temporary directories
	defer cleanup()

	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(user, pass)}
	server := model.Service.NewServer()
	defer server.Close()

	if err := shapeInventory(server.URL); err != nil {
		fatal("shaping the inventory: %v", err)
	}

	public := *server.URL
	public.User = nil
	fmt.Printf("VCSIM_URL %s\n", public.String())
	for _, ds := range simulator.Map.All("Datastore") {
		d := ds.(*simulator.Datastore)
		fmt.Printf("VCSIM_DATASTORE %s %s\n", d.Name, d.Info.GetDatastoreInfo().Url)
	}
	fmt.Println("VCSIM_READY")
	os.Stdout.Sync()

	waitForStop(stop, *exitOnEOF)
}

// cleanup runs on every exit path, fatal ones included (os.Exit skips defers).
var cleanup = func() {}

func fatal(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "vcsim: "+format+"\n", args...)
	cleanup()
	os.Exit(1)
}

func waitForStop(stop chan os.Signal, exitOnEOF bool) {
	if exitOnEOF {
		go func() {
			_, _ = io.Copy(ioutil.Discard, os.Stdin)
			stop <- syscall.SIGTERM
		}()
	}
	<-stop
}

// shapeInventory gives the default VMs the variety the reader must meet.
// Names are the simulator's: DC0_H0_VM0/1 on the standalone host,
// DC0_C0_RP0_VM0/1 in cluster DC0_C0.
func shapeInventory(u *url.URL) error {
	ctx := context.Background()
	client, err := govmomi.NewClient(ctx, u, true) // in-process, our own server
	if err != nil {
		return err
	}
	finder := find.NewFinder(client.Client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)

	vm := func(name string) *object.VirtualMachine {
		v, ferr := finder.VirtualMachine(ctx, name)
		if ferr != nil {
			fatal("finding %s: %v", name, ferr)
		}
		return v
	}

	// A powered-off BIOS VM with a little of everything a conversion must carry.
	if err := powerOff(ctx, vm("DC0_H0_VM1")); err != nil {
		return err
	}
	if err := reconfigure(ctx, vm("DC0_H0_VM1"), biosSpec()); err != nil {
		return fmt.Errorf("BIOS VM: %v", err)
	}

	// A powered-off EFI VM with secure boot, a topology, hot-add and CBT.
	efi := vm("DC0_C0_RP0_VM1")
	if err := powerOff(ctx, efi); err != nil {
		return err
	}
	if err := reconfigure(ctx, efi, efiSpec()); err != nil {
		return fmt.Errorf("EFI VM: %v", err)
	}

	// A running VM with a snapshot, pinned CPUs and a DRS rule naming it.
	running := vm("DC0_C0_RP0_VM0")
	affinity := types.VirtualMachineConfigSpec{
		CpuAffinity: &types.VirtualMachineAffinityInfo{AffinitySet: []int32{0, 1}},
		GuestId:     "debian10_64Guest",
	}
	if err := reconfigure(ctx, running, affinity); err != nil {
		return fmt.Errorf("affinity: %v", err)
	}
	task, err := running.CreateSnapshot(ctx, "before-upgrade", "taken by the test bed", false, false)
	if err != nil {
		return err
	}
	if err := task.Wait(ctx); err != nil {
		return err
	}
	return addDrsRule(ctx, finder, running, efi)
}

func powerOff(ctx context.Context, vm *object.VirtualMachine) error {
	task, err := vm.PowerOff(ctx)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

func reconfigure(ctx context.Context, vm *object.VirtualMachine, spec types.VirtualMachineConfigSpec) error {
	task, err := vm.Reconfigure(ctx, spec)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

func biosSpec() types.VirtualMachineConfigSpec {
	serial := &types.VirtualSerialPort{
		VirtualDevice: types.VirtualDevice{
			Key: -10,
			Backing: &types.VirtualSerialPortFileBackingInfo{
				VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
					FileName: "[LocalDS_0] DC0_H0_VM1/serial0.log",
				},
			},
		},
		YieldOnPoll: true,
	}
	return types.VirtualMachineConfigSpec{
		NumCPUs:    2,
		MemoryMB:   1024,
		GuestId:    "debian10_64Guest",
		Annotation: "web frontend",
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{
				Operation: types.VirtualDeviceConfigSpecOperationAdd,
				Device:    serial,
			},
		},
	}
}

func efiSpec() types.VirtualMachineConfigSpec {
	usb := &types.VirtualUSBXHCIController{
		VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: -20}},
	}
	tpm := &types.VirtualTPM{VirtualDevice: types.VirtualDevice{Key: -21}}
	gpu := &types.VirtualPCIPassthrough{VirtualDevice: types.VirtualDevice{
		Key: -22,
		Backing: &types.VirtualPCIPassthroughDeviceBackingInfo{
			VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "GPU"},
			Id:                             "0000:3b:00.0",
			DeviceId:                       "1eb8",
			SystemId:                       "test-bed",
			VendorId:                       0x10de,
		},
	}}
	return types.VirtualMachineConfigSpec{
		NumCPUs:               4,
		NumCoresPerSocket:     2,
		MemoryMB:              2048,
		GuestId:               "windows9Server64Guest",
		Firmware:              string(types.GuestOsDescriptorFirmwareTypeEfi),
		BootOptions:           &types.VirtualMachineBootOptions{EfiSecureBootEnabled: types.NewBool(true)},
		CpuHotAddEnabled:      types.NewBool(true),
		MemoryHotAddEnabled:   types.NewBool(true),
		ChangeTrackingEnabled: types.NewBool(true),
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: usb},
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: tpm},
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: gpu},
		},
	}
}

// addDrsRule keeps the two cluster VMs apart, as an anti-affinity rule would
// on a real cluster; the reader must report it for both VMs.
func addDrsRule(ctx context.Context, finder *find.Finder, vms ...*object.VirtualMachine) error {
	cluster, err := finder.ClusterComputeResource(ctx, "DC0_C0")
	if err != nil {
		return err
	}
	var refs []types.ManagedObjectReference
	for _, v := range vms {
		refs = append(refs, v.Reference())
	}
	rule := &types.ClusterAntiAffinityRuleSpec{
		ClusterRuleInfo: types.ClusterRuleInfo{Name: "keep-apart", Enabled: types.NewBool(true)},
		Vm:              refs,
	}
	spec := &types.ClusterConfigSpecEx{
		RulesSpec: []types.ClusterRuleSpec{{
			ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd},
			Info:            rule,
		}},
	}
	task, err := cluster.Reconfigure(ctx, spec, true)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}
