package emulator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gcefleet/gcefleet/internal/netcap"
)

// metadataSrv is the metadata server of one RUNNING instance, listening on
// the instance's own address. Its process finds it through GCE_METADATA_HOST.
type metadataSrv struct {
	addr string
	srv  *http.Server
}

func (in *instance) closeMetadata() {
	if in.meta != nil {
		in.meta.srv.Close()
		in.meta = nil
	}
}

// metadataChanged wakes wait_for_change requests. e.mu is held.
func (in *instance) metadataChanged() {
	close(in.metaGen)
	in.metaGen = make(chan struct{})
}

// startMetadata serves in's metadata on its own address. e.mu is held.
func (e *Emulator) startMetadata(in *instance) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(in.addrIP, "0"))
	if err != nil {
		// Loopback addresses other than 127.0.0.1 are not routed on
		// every system (macOS); fall back to it.
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
	}
	m := &metadataSrv{addr: ln.Addr().String()}
	if e.metaConns == nil {
		// All metadata servers together keep half the process's
		// connections; the API's listener (gcefleet emulator) the other.
		e.metaConns = netcap.NewPool(netcap.DefaultMax() / 2)
	}
	capped := e.metaConns.Listen(ln)
	// No write timeout: wait_for_change waits as long as its caller asks.
	m.srv = capped.Track(&http.Server{Handler: e.metadataHandler(in), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute})
	in.meta = m
	go m.srv.Serve(capped)
	return nil
}

func (e *Emulator) metadataHandler(in *instance) http.Handler {
	e.identity.warm()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Metadata-Flavor", "Google")
		w.Header().Set("Server", "Metadata Server for VM")
		if r.Header.Get("Metadata-Flavor") != "Google" {
			http.Error(w, "Missing required header: Metadata-Flavor", http.StatusForbidden)
			return
		}
		if r.Header.Get("X-Forwarded-For") != "" {
			http.Error(w, "Request contains X-Forwarded-For header and will not be served.", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodGet {
			http.Error(w, "Method not allowed", http.StatusMethodNotAllowed)
			return
		}
		path, ok := strings.CutPrefix(r.URL.Path, "/computeMetadata/v1/")
		if !ok {
			if r.URL.Path == "/" {
				fmt.Fprint(w, "computeMetadata/\n")
				return
			}
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		if path == "instance/service-accounts/default/token" || strings.HasSuffix(path, "/token") {
			e.serveToken(w, in)
			return
		}
		if acct, ok := strings.CutPrefix(path, "instance/service-accounts/"); ok && strings.HasSuffix(acct, "/identity") {
			e.serveIdentity(w, r, in, strings.TrimSuffix(acct, "/identity"))
			return
		}
		node, etag, gen, found := e.lookupMetadata(in, path)
		if q.Get("wait_for_change") == "true" {
			last := q.Get("last_etag")
			if last == "" || last == etag {
				timeout := 60 * time.Second
				if s := q.Get("timeout_sec"); s != "" {
					if n, err := strconv.Atoi(s); err == nil && n > 0 {
						timeout = time.Duration(n) * time.Second
					}
				}
				ctx, cancel := context.WithTimeout(r.Context(), timeout)
				defer cancel()
				for etag == last || last == "" {
					select {
					case <-gen:
					case <-ctx.Done():
						goto answer
					case <-e.done:
						goto answer
					}
					last = etag
					node, etag, gen, found = e.lookupMetadata(in, path)
				}
			}
		}
	answer:
		if !found {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", etag)
		recursive := q.Get("recursive") == "true"
		alt := q.Get("alt")
		if dir, isDir := node.(map[string]any); isDir && !recursive && alt != "json" {
			w.Header().Set("Content-Type", "application/text")
			keys := make([]string, 0, len(dir))
			for k, v := range dir {
				if _, sub := v.(map[string]any); sub {
					k += "/"
				}
				keys = append(keys, k)
			}
			slices.Sort(keys)
			fmt.Fprint(w, strings.Join(keys, "\n")+"\n")
			return
		}
		if s, isLeaf := node.(string); isLeaf && alt != "json" {
			w.Header().Set("Content-Type", "application/text")
			fmt.Fprint(w, s)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		// The keys of attributes are the user's and stay as written.
		p := strings.Trim(path, "/")
		b, _ := json.Marshal(camelKeys(node, p == "instance/attributes" || p == "project/attributes"))
		w.Write(b)
	})
}

func (e *Emulator) serveToken(w http.ResponseWriter, in *instance) {
	e.mu.Lock()
	hasSA := len(in.api.ServiceAccounts) > 0
	e.mu.Unlock()
	if !hasSA {
		http.Error(w, "The instance has no service account.", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token": "emulator-token-" + strconv.FormatUint(newID(), 36),
		"expires_in":   3599,
		"token_type":   "Bearer",
	})
}

// lookupMetadata finds the node at path in in's metadata tree, with its ETag
// and the channel that closes when metadata next changes.
func (e *Emulator) lookupMetadata(in *instance, path string) (node any, etag string, gen chan struct{}, found bool) {
	e.mu.Lock()
	tree := e.metadataTree(in)
	gen = in.metaGen
	e.mu.Unlock()
	node = tree
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		if part == "" {
			continue
		}
		dir, ok := node.(map[string]any)
		if !ok {
			return nil, "", gen, false
		}
		if node, ok = dir[part]; !ok {
			return nil, "", gen, false
		}
	}
	b, _ := json.Marshal(node)
	sum := sha256.Sum256(b)
	return node, hex.EncodeToString(sum[:8]), gen, true
}

// metadataTree renders what the metadata server serves for in. e.mu is held.
func (e *Emulator) metadataTree(in *instance) map[string]any {
	p := e.projects[in.project]
	num := strconv.FormatInt(p.number, 10)
	attrs := map[string]any{}
	for _, it := range in.api.Metadata.Items {
		if it.Value != nil {
			attrs[it.Key] = *it.Value
		}
	}
	var nics []any
	for _, ni := range in.api.NetworkInterfaces {
		var acs []any
		for _, ac := range ni.AccessConfigs {
			acs = append(acs, map[string]any{"external-ip": ac.NatIP, "type": ac.Type})
		}
		nic := map[string]any{
			"ip":         ni.NetworkIP,
			"network":    "projects/" + num + "/networks/" + lastSegment(ni.Network),
			"subnetmask": "255.255.240.0",
			"gateway":    "10.128.0.1",
			"mac":        "42:01:0a:80:00:02",
			"mtu":        "1460",
		}
		if len(acs) > 0 {
			nic["access-configs"] = listDir(acs)
		}
		nics = append(nics, nic)
	}
	sas := map[string]any{}
	for _, sa := range in.api.ServiceAccounts {
		entry := map[string]any{"email": sa.Email, "aliases": "default", "scopes": strings.Join(sa.Scopes, "\n") + "\n"}
		sas["default"] = entry
		sas[sa.Email] = entry
	}
	tags := "[]"
	if in.api.Tags != nil && len(in.api.Tags.Items) > 0 {
		b, _ := json.Marshal(in.api.Tags.Items)
		tags = string(b)
	}
	preempted := "FALSE"
	if in.preempted {
		preempted = "TRUE"
	}
	sched := map[string]any{"preemptible": "FALSE", "automatic-restart": "TRUE", "on-host-maintenance": "MIGRATE"}
	if s := in.api.Scheduling; s != nil {
		if s.ProvisioningModel == "SPOT" || s.Preemptible {
			sched["preemptible"] = "TRUE"
		}
		if s.AutomaticRestart != nil && !*s.AutomaticRestart {
			sched["automatic-restart"] = "FALSE"
		}
		if s.OnHostMaintenance != "" {
			sched["on-host-maintenance"] = s.OnHostMaintenance
		}
	}
	labels := map[string]any{}
	for k, v := range in.api.Labels {
		labels[k] = v
	}
	return map[string]any{
		"instance": map[string]any{
			"attributes":         attrs,
			"cpu-platform":       in.api.CpuPlatform,
			"description":        in.api.Description,
			"hostname":           fmt.Sprintf("%s.%s.c.%s.internal", in.api.Name, in.zone, in.project),
			"id":                 strconv.FormatUint(in.api.Id, 10),
			"image":              "",
			"machine-type":       "projects/" + num + "/machineTypes/" + lastSegment(in.api.MachineType),
			"name":               in.api.Name,
			"network-interfaces": listDir(nics),
			"preempted":          preempted,
			"scheduling":         sched,
			"service-accounts":   sas,
			"tags":               tags,
			"zone":               "projects/" + num + "/zones/" + in.zone,
		},
		"project": map[string]any{
			"attributes":         map[string]any{},
			"numeric-project-id": num,
			"project-id":         in.project,
		},
	}
}

// listDir turns a list into the metadata server's numbered directory.
func listDir(items []any) map[string]any {
	m := map[string]any{}
	for i, it := range items {
		m[strconv.Itoa(i)] = it
	}
	return m
}

// camelKeys renders a metadata node as recursive JSON does: hyphenated keys
// become camelCase, numbered directories become lists, and the keys of
// attributes stay as they are.
func camelKeys(node any, verbatim bool) any {
	dir, ok := node.(map[string]any)
	if !ok {
		return node
	}
	if _, numbered := dir["0"]; numbered && !verbatim {
		list := make([]any, len(dir))
		for k, v := range dir {
			i, _ := strconv.Atoi(k)
			if i < len(list) {
				list[i] = camelKeys(v, false)
			}
		}
		return list
	}
	out := make(map[string]any, len(dir))
	for k, v := range dir {
		key := k
		if !verbatim {
			key = camel(k)
		}
		out[key] = camelKeys(v, !verbatim && k == "attributes")
	}
	return out
}

func camel(s string) string {
	parts := strings.Split(s, "-")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}
