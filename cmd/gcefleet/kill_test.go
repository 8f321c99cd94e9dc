package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestMain lets the test binary play two parts besides the tests: the
// gcefleet command itself, and a container image that runs until killed.
func TestMain(m *testing.M) {
	switch os.Getenv("GCEFLEET_TEST_ROLE") {
	case "cli":
		main()
	case "container":
		fmt.Printf("container pid %d\n", os.Getpid())
		select {}
	}
	os.Exit(m.Run())
}

// TestKilledEmulatorLeavesNoProcess kills `gcefleet emulator` with SIGKILL
// while an instance's container runs and checks that the container dies too.
func TestKilledEmulatorLeavesNoProcess(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const image = "gcr.io/test/sleeper"
	cmd, stdout := testutil.StartProcess(t, []string{"GCEFLEET_TEST_ROLE=cli"}, self, "emulator", "--listen", "127.0.0.1:0", "--image", image+"="+self)
	line, err := stdout.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the endpoint: %v", err)
	}
	ctx := context.Background()
	svc, err := compute.NewService(ctx, option.WithEndpoint(strings.TrimSpace(line)+"/compute/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	insertSleeper(t, svc, image)
	var pid int
	testutil.WaitFor(t, "the container to print its pid", func() bool {
		out, err := svc.Instances.GetSerialPortOutput("p", "us-central1-a", "sleeper").Do()
		if err != nil {
			t.Fatal(err)
		}
		if _, rest, ok := strings.Cut(out.Contents, "container pid "); ok {
			pid, _ = strconv.Atoi(strings.Fields(rest)[0])
		}
		return pid != 0
	})
	if !testutil.Alive(pid) {
		t.Fatalf("container %d is not running", pid)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitKilled(t, cmd, 10*time.Second, "the emulator")
	testutil.WaitGone(t, pid, 10*time.Second, "the container of the killed emulator")
}

// insertSleeper makes instance "sleeper" in p/us-central1-a, whose
// container runs image as this test binary in its container role.
func insertSleeper(t *testing.T, svc *compute.Service, image string) {
	t.Helper()
	decl := "spec:\n  containers:\n  - name: c\n    image: " + image + "\n    env:\n    - name: GCEFLEET_TEST_ROLE\n      value: container\n  restartPolicy: Never\n"
	op, err := svc.Instances.Insert("p", "us-central1-a", &compute.Instance{
		Name:              "sleeper",
		MachineType:       "zones/us-central1-a/machineTypes/e2-small",
		Disks:             []*compute.AttachedDisk{{Boot: true, InitializeParams: &compute.AttachedDiskInitializeParams{SourceImage: "projects/cos-cloud/global/images/family/cos-stable"}}},
		NetworkInterfaces: []*compute.NetworkInterface{{}},
		Metadata:          &compute.Metadata{Items: []*compute.MetadataItems{{Key: "gce-container-declaration", Value: &decl}}},
	}).Do()
	if err != nil {
		t.Fatal(err)
	}
	if op, err = svc.ZoneOperations.Wait("p", "us-central1-a", op.Name).Do(); err != nil || op.Error != nil {
		t.Fatalf("insert: %v %+v", err, op.Error)
	}
}
