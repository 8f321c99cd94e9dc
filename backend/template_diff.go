package backend

import (
	"fmt"
	"slices"
	"strings"

	"cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// ownTemplateOf checks that tm, found under the name of t's current
// revision, is this deployment's (see ownTemplate) and holds what the
// backend would have made of t.
func (j *Jobs) ownTemplateOf(tm *computepb.InstanceTemplate, t Template) error {
	if err := j.ownTemplate(tm, t.Project, false); err != nil {
		return err
	}
	want, err := t.resource(j.Deployment(), j.Database())
	if err != nil {
		return err
	}
	if _, ok := tm.GetProperties().GetLabels()[DatabaseLabel]; !ok {
		// Made before databases had identities (ownTemplate checked one
		// that has it).
		delete(want.GetProperties().GetLabels(), DatabaseLabel)
	}
	if d := templateDiff(want, tm); len(d) > 0 {
		return notOurs(fmt.Sprintf("instance template %s in %s exists with other properties (%s): not ours; delete it or rename the base_name", tm.GetName(), t.Project, strings.Join(d, ", ")))
	}
	return nil
}

// templateDiff returns the fields in which got, an instance template found
// under the name of one the backend would make as want, differs from
// want: empty if got is what the backend made. Labels alone do not tell:
// anyone who may create templates in the project can copy them, under a
// name plan prints, and have the backend make, catalog and lease machines
// of other contents (another machine type, a startup script). So every
// property is compared; one got has and want does not is accepted only as
// a value Compute Engine fills in by itself.
func templateDiff(want, got *computepb.InstanceTemplate) []string {
	var out []string
	diffMessage(&out, "", want.GetProperties().ProtoReflect(), got.GetProperties().ProtoReflect())
	slices.Sort(out)
	return slices.Compact(out)
}

// gceDefaults are the values Compute Engine fills in, by field name, of
// fields the backend leaves unset: an existing template carrying them is
// still the backend's.
var gceDefaults = map[string][]string{
	"kind": nil, "fingerprint": nil, "name": nil, "deviceName": nil, // any value: output only
	"type": {"PERSISTENT", "ONE_TO_ONE_NAT"}, "mode": {"READ_WRITE"}, "interface": {"SCSI"},
	"onHostMaintenance": {"MIGRATE", "TERMINATE"}, "automaticRestart": {"true", "false"},
	"provisioningModel": {"STANDARD"}, "stackType": {"IPV4_ONLY"}, "networkTier": {"PREMIUM"},
	"network": {"default"},
}

// urlFields hold a resource's name or URL: compared by their last segment,
// or for images from projects/ on, since GCE may answer with a full URL.
var urlFields = map[string]bool{"machineType": true, "network": true, "subnetwork": true, "diskType": true, "sourceImage": true}

func diffMessage(out *[]string, at string, want, got protoreflect.Message) {
	fields := want.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		path := fd.JSONName()
		if at != "" {
			path = at + "." + path
		}
		w, g := want.Has(fd), got.Has(fd)
		if fd.IsList() && fd.Message() != nil && fd.Message().FullName() == "google.cloud.compute.v1.Items" {
			// Metadata, by key; a list without items may be absent.
			wi, gi := itemsOf(want.Get(fd).List()), itemsOf(got.Get(fd).List())
			for k, v := range wi {
				if g, ok := gi[k]; !ok || g != v {
					*out = append(*out, at+"."+k)
				}
			}
			for k := range gi {
				if _, ok := wi[k]; !ok {
					*out = append(*out, at+"."+k)
				}
			}
			continue
		}
		switch {
		case !w && !g:
			continue
		case !w:
			if !isDefault(fd, got.Get(fd)) {
				*out = append(*out, path)
			}
			continue
		case !g:
			if fd.Message() == nil || fd.IsList() || fd.IsMap() || !isDefaultMessage(want.Get(fd).Message()) {
				*out = append(*out, path)
			}
			continue
		}
		wv, gv := want.Get(fd), got.Get(fd)
		switch {
		case fd.IsMap(): // labels
			wm, gm := wv.Map(), gv.Map()
			wm.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				if !gm.Has(k) || gm.Get(k).String() != v.String() {
					*out = append(*out, path+"."+k.String())
				}
				return true
			})
			gm.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				if !wm.Has(k) {
					*out = append(*out, path+"."+k.String())
				}
				return true
			})
		case fd.IsList():
			wl, gl := wv.List(), gv.List()
			if wl.Len() != gl.Len() {
				*out = append(*out, path)
				continue
			}
			for i := range wl.Len() {
				if fd.Message() != nil {
					diffMessage(out, path, wl.Get(i).Message(), gl.Get(i).Message())
				} else if wl.Get(i).String() != gl.Get(i).String() {
					*out = append(*out, path)
				}
			}
		case fd.Message() != nil:
			diffMessage(out, path, wv.Message(), gv.Message())
		case urlFields[fd.JSONName()]:
			if norm(wv.String()) != norm(gv.String()) {
				*out = append(*out, path)
			}
		case wv.Interface() != gv.Interface():
			*out = append(*out, path)
		}
	}
}

// isDefault says whether v, of a field the backend leaves unset, is zero
// or a value Compute Engine fills in by itself.
func isDefault(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
	switch {
	case fd.IsList():
		l := v.List()
		for i := range l.Len() {
			if fd.Message() == nil || !isDefaultMessage(l.Get(i).Message()) {
				return false
			}
		}
		return true
	case fd.IsMap():
		return v.Map().Len() == 0
	case fd.Message() != nil:
		return isDefaultMessage(v.Message())
	}
	allowed, known := gceDefaults[fd.JSONName()]
	s := fmt.Sprint(v.Interface())
	if urlFields[fd.JSONName()] {
		s = gcecompute.LastSegment(s)
	}
	return s == "" || s == "false" || s == "0" || known && (allowed == nil || slices.Contains(allowed, s))
}

func isDefaultMessage(m protoreflect.Message) bool {
	ok := true
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		ok = isDefault(fd, v)
		return ok
	})
	return ok
}

func itemsOf(l protoreflect.List) map[string]string {
	out := map[string]string{}
	for i := range l.Len() {
		it := l.Get(i).Message().Interface().(*computepb.Items)
		out[it.GetKey()] = it.GetValue()
	}
	return out
}

// norm is a resource's reference as compared: from projects/ on for an
// image, the last segment for the rest.
func norm(s string) string {
	if i := strings.Index(s, "projects/"); i >= 0 && strings.Contains(s, "/images/") {
		return s[i:]
	}
	return gcecompute.LastSegment(s)
}

// notOurs is an error that says in its own words that a resource is not
// this deployment's; it is errNotOurs.
type notOurs string

func (e notOurs) Error() string { return string(e) }
func (e notOurs) Unwrap() error { return errNotOurs }
