package emulator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// containerDecl is the part of Container-Optimized OS's
// gce-container-declaration that the emulator acts on.
type containerDecl struct {
	Spec struct {
		Containers []struct {
			Name    string   `yaml:"name"`
			Image   string   `yaml:"image"`
			Command []string `yaml:"command"`
			Args    []string `yaml:"args"`
			Env     []struct {
				Name  string `yaml:"name"`
				Value string `yaml:"value"`
			} `yaml:"env"`
		} `yaml:"containers"`
		RestartPolicy string `yaml:"restartPolicy"`
	} `yaml:"spec"`
}

const containerDeclKey = "gce-container-declaration"

func parseContainerDecl(s string) (*containerDecl, error) {
	var d containerDecl
	if err := yaml.Unmarshal([]byte(s), &d); err != nil {
		return nil, err
	}
	if len(d.Spec.Containers) != 1 {
		return nil, fmt.Errorf("spec.containers must hold exactly one container, it holds %d", len(d.Spec.Containers))
	}
	if d.Spec.Containers[0].Image == "" {
		return nil, errors.New("spec.containers[0].image is empty")
	}
	switch d.Spec.RestartPolicy {
	case "":
		d.Spec.RestartPolicy = "Always"
	case "Always", "OnFailure", "Never":
	default:
		return nil, fmt.Errorf("spec.restartPolicy %q is not one of Always, OnFailure, Never", d.Spec.RestartPolicy)
	}
	return &d, nil
}

// imagePath finds the executable that stands for image: an exact key first,
// then the image without its tag or digest.
func (e *Emulator) imagePath(image string) (string, bool) {
	if p, ok := e.opts.Images[image]; ok {
		return p, true
	}
	base := image
	if i := strings.IndexByte(base, '@'); i >= 0 {
		base = base[:i]
	}
	if i := strings.LastIndexByte(base, ':'); i > strings.LastIndexByte(base, '/') {
		base = base[:i]
	}
	p, ok := e.opts.Images[base]
	return p, ok
}

func (e *Emulator) metadataValue(in *instance, key string) (string, bool) {
	for _, it := range in.api.Metadata.Items {
		if it.Key == key && it.Value != nil {
			return *it.Value, true
		}
	}
	return "", false
}

// startContainer starts the process for a RUNNING instance's container
// declaration, if it has one, with a metadata server for it. e.mu is held.
func (e *Emulator) startContainer(in *instance) {
	declText, ok := e.metadataValue(in, containerDeclKey)
	if !ok {
		e.serialf(in, "emulator: no %s in metadata; no container runs on this instance\n", containerDeclKey)
		return
	}
	decl, err := parseContainerDecl(declText)
	if err != nil {
		e.serialf(in, "konlet: invalid container declaration: %v\n", err)
		return
	}
	ctr := decl.Spec.Containers[0]
	path, ok := e.imagePath(ctr.Image)
	if !ok {
		e.serialf(in, "konlet: image %q is not known to the emulator; map it to an executable with --image %s=PATH\n", ctr.Image, ctr.Image)
		return
	}
	// Only an instance with a process gets a metadata server: nothing else
	// could ask it, and a listener per idle instance would not scale.
	if err := e.startMetadata(in); err != nil {
		e.serialf(in, "emulator: metadata server: %v\n", err)
	} else {
		e.serialf(in, "emulator: metadata server for this instance: GCE_METADATA_HOST=%s\n", in.meta.addr)
	}
	// The image's executable stands for its entrypoint: command[0] names
	// the program inside the image, the rest are its arguments.
	var args []string
	if len(ctr.Command) > 1 {
		args = append(args, ctr.Command[1:]...)
	}
	args = append(args, ctr.Args...)
	env := os.Environ()
	for _, kv := range ctr.Env {
		env = append(env, kv.Name+"="+kv.Value)
	}
	if in.meta != nil {
		env = append(env, "GCE_METADATA_HOST="+in.meta.addr, "GCE_METADATA_IP="+in.meta.addr)
	}
	e.serialf(in, "konlet: launching user container '%s' as %s\n", ctr.Image, path)
	pr, err := e.spawn(in, path, args, env)
	if err != nil {
		e.serialf(in, "konlet: starting container: %v\n", err)
		return
	}
	in.proc = pr
	policy := decl.Spec.RestartPolicy
	e.goBackground(func() { e.watch(in, pr, policy) })
}

// watch waits for the container's process to exit and moves the instance as
// the restart policy says.
func (e *Emulator) watch(in *instance, pr *process, policy string) {
	<-pr.done
	e.mu.Lock()
	defer e.mu.Unlock()
	e.serialf(in, "konlet: container exited: %s\n", pr.state)
	if in.proc != pr || e.closed {
		return // stopped on purpose
	}
	in.proc = nil
	restart := policy == "Always" || (policy == "OnFailure" && !pr.success)
	if restart && in.api.Status == "RUNNING" {
		e.serialf(in, "konlet: restarting container (restartPolicy %s)\n", policy)
		in.closeMetadata()
		e.startContainer(in)
		return
	}
	if in.api.Status == "RUNNING" {
		e.beginStop(in, "TERMINATED", nil)
	}
}

// process is a running container process.
type process struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when it has exited
	state   string        // how it exited, set before done closes
	success bool
}

func (e *Emulator) spawn(in *instance, path string, args, env []string) (*process, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = env
	w := e.outputWriter(in)
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pr := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		pr.success = err == nil
		if cmd.ProcessState != nil {
			pr.state = cmd.ProcessState.String()
		} else {
			pr.state = fmt.Sprint(err)
		}
		close(pr.done)
	}()
	return pr, nil
}

// stop asks the process to exit with SIGTERM and kills it, with everything
// it started, if it has not exited after grace.
func (pr *process) stop(grace time.Duration) {
	select {
	case <-pr.done:
		return
	default:
	}
	signalGroup(pr.cmd.Process, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-pr.done:
	case <-t.C:
		signalGroup(pr.cmd.Process, syscall.SIGKILL)
		<-pr.done
	}
	// Children the container left behind go with it.
	signalGroup(pr.cmd.Process, syscall.SIGKILL)
}

// outputWriter returns where the process of in writes: its serial port and,
// when configured, the emulator's process output with a name prefix.
func (e *Emulator) outputWriter(in *instance) io.Writer {
	if in.serial == nil {
		in.serial = newSerialBuffer(serialLimit)
	}
	if e.opts.ProcessOutput == nil {
		return in.serial
	}
	return io.MultiWriter(in.serial, &prefixWriter{w: e.opts.ProcessOutput, prefix: in.api.Name + ": "})
}

// serialf writes a line of the emulator's own to in's serial port. e.mu is held.
func (e *Emulator) serialf(in *instance, format string, args ...any) {
	if in.serial == nil {
		in.serial = newSerialBuffer(serialLimit)
	}
	fmt.Fprintf(in.serial, format, args...)
}

// serialLimit is how much serial output an instance keeps; older output is
// dropped, as GCE keeps only the most recent megabyte.
const serialLimit = 1 << 20

// serialBuffer keeps the tail of an instance's output with absolute offsets.
type serialBuffer struct {
	mu    sync.Mutex
	buf   []byte
	start int64 // offset of buf[0] in the whole output
	limit int
}

func newSerialBuffer(limit int) *serialBuffer { return &serialBuffer{limit: limit} }

func (s *serialBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, p...)
	if over := len(s.buf) - s.limit; over > 0 {
		s.buf = append(s.buf[:0:0], s.buf[over:]...)
		s.start += int64(over)
	}
	return len(p), nil
}

// read returns the output from offset start (or the oldest kept, if start
// is older; a negative start counts back from the end), the offset it
// begins at and the offset to read from next.
func (s *serialBuffer) read(start int64) (string, int64, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	end := s.start + int64(len(s.buf))
	if start < 0 {
		start += end // the most recent -start bytes
	}
	if start < s.start {
		start = s.start
	}
	if start > end {
		start = end
	}
	return string(s.buf[start-s.start:]), start, end
}

// prefixWriter writes whole lines to w, each with prefix.
type prefixWriter struct {
	mu      sync.Mutex
	w       io.Writer
	prefix  string
	partial []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		line := append([]byte(p.prefix), p.partial[:i+1]...)
		p.w.Write(line)
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}

// addrAllocator hands out loopback addresses 127.B.x.y, one per instance,
// so that instances can listen on the same port side by side.
type addrAllocator struct {
	mu    sync.Mutex
	block int
	n     int
}

func newAddrAllocator(block int) *addrAllocator {
	if block <= 0 || block > 254 {
		block = 2 + rand.IntN(250)
	}
	return &addrAllocator{block: block}
}

func (a *addrAllocator) next() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	if a.n > 254*254 {
		a.n = 1
	}
	x, y := (a.n-1)/254, (a.n-1)%254+1
	return fmt.Sprintf("127.%d.%d.%d", a.block, x, y)
}
