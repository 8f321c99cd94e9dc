package emulator

import (
	"errors"
	"net/http"
)

// call is one API request on its way to a handler: the request, its
// project (created on first use) and the discovery method id.
type call struct {
	r       *http.Request
	p       *project
	method  string // e.g. compute.instances.insert
	zone    string // the zone path parameter, "" for global and regional calls
	region  string // the region path parameter, or the zone's region
	urlPath string
}

// param returns a path parameter of the request.
func (c *call) param(name string) string { return c.r.PathValue(name) }

// handlerFunc answers a call with a value to encode as JSON or an error. It
// runs with e.mu held unless the route says otherwise.
type handlerFunc func(c *call) (any, error)

func (e *Emulator) routes() {
	const v1 = "/compute/v1/projects/{project}"
	const z = v1 + "/zones/{zone}"
	const r = v1 + "/regions/{region}"
	const g = v1 + "/global"

	for _, rt := range []struct {
		pattern, method string
		h               handlerFunc
		unlocked        bool
	}{
		// Locations and catalogue.
		{"GET " + v1 + "/zones", "compute.zones.list", e.listZones, false},
		{"GET " + z, "compute.zones.get", e.getZone, false},
		{"GET " + v1 + "/regions", "compute.regions.list", e.listRegions, false},
		{"GET " + r, "compute.regions.get", e.getRegion, false},
		{"GET " + z + "/machineTypes", "compute.machineTypes.list", e.listMachineTypes, false},
		{"GET " + z + "/machineTypes/{name}", "compute.machineTypes.get", e.getMachineType, false},
		{"GET " + v1 + "/aggregated/machineTypes", "compute.machineTypes.aggregatedList", e.aggregatedListMachineTypes, false},
		{"GET " + g + "/images", "compute.images.list", e.listImages, false},
		{"GET " + g + "/images/{name}", "compute.images.get", e.getImage, false},
		{"GET " + g + "/images/family/{family}", "compute.images.getFromFamily", e.getImageFromFamily, false},
		{"GET " + v1, "compute.projects.get", e.getProject, false},

		// Instances.
		{"POST " + z + "/instances", "compute.instances.insert", e.insertInstance, false},
		{"POST " + z + "/instances/bulkInsert", "compute.instances.bulkInsert", e.bulkInsertInstances, false},
		{"GET " + z + "/instances", "compute.instances.list", e.listInstances, false},
		{"GET " + v1 + "/aggregated/instances", "compute.instances.aggregatedList", e.aggregatedListInstances, false},
		{"GET " + z + "/instances/{name}", "compute.instances.get", e.getInstance, false},
		{"DELETE " + z + "/instances/{name}", "compute.instances.delete", e.deleteInstance, false},
		{"POST " + z + "/instances/{name}/start", "compute.instances.start", e.startInstance, false},
		{"POST " + z + "/instances/{name}/stop", "compute.instances.stop", e.stopInstance, false},
		{"POST " + z + "/instances/{name}/setMetadata", "compute.instances.setMetadata", e.setInstanceMetadata, false},
		{"POST " + z + "/instances/{name}/setLabels", "compute.instances.setLabels", e.setInstanceLabels, false},
		{"GET " + z + "/instances/{name}/serialPort", "compute.instances.getSerialPortOutput", e.getSerialPortOutput, false},

		// Instance templates.
		{"POST " + g + "/instanceTemplates", "compute.instanceTemplates.insert", e.insertTemplate, false},
		{"GET " + g + "/instanceTemplates", "compute.instanceTemplates.list", e.listTemplates, false},
		{"GET " + g + "/instanceTemplates/{name}", "compute.instanceTemplates.get", e.getTemplate, false},
		{"DELETE " + g + "/instanceTemplates/{name}", "compute.instanceTemplates.delete", e.deleteTemplate, false},

		// Managed instance groups.
		{"POST " + z + "/instanceGroupManagers", "compute.instanceGroupManagers.insert", e.insertIGM, false},
		{"GET " + z + "/instanceGroupManagers", "compute.instanceGroupManagers.list", e.listIGMs, false},
		{"GET " + v1 + "/aggregated/instanceGroupManagers", "compute.instanceGroupManagers.aggregatedList", e.aggregatedListIGMs, false},
		{"GET " + z + "/instanceGroupManagers/{name}", "compute.instanceGroupManagers.get", e.getIGM, false},
		{"DELETE " + z + "/instanceGroupManagers/{name}", "compute.instanceGroupManagers.delete", e.deleteIGM, false},
		{"POST " + z + "/instanceGroupManagers/{name}/resize", "compute.instanceGroupManagers.resize", e.resizeIGM, false},
		{"POST " + z + "/instanceGroupManagers/{name}/createInstances", "compute.instanceGroupManagers.createInstances", e.createIGMInstances, false},
		{"POST " + z + "/instanceGroupManagers/{name}/deleteInstances", "compute.instanceGroupManagers.deleteInstances", e.deleteIGMInstances, false},
		{"POST " + z + "/instanceGroupManagers/{name}/listManagedInstances", "compute.instanceGroupManagers.listManagedInstances", e.listManagedInstances, false},

		// Firewalls.
		{"POST " + g + "/firewalls", "compute.firewalls.insert", e.insertFirewall, false},
		{"GET " + g + "/firewalls", "compute.firewalls.list", e.listFirewalls, false},
		{"GET " + g + "/firewalls/{name}", "compute.firewalls.get", e.getFirewall, false},
		{"DELETE " + g + "/firewalls/{name}", "compute.firewalls.delete", e.deleteFirewall, false},

		// Operations.
		{"GET " + z + "/operations", "compute.zoneOperations.list", e.listOps(zoneScope), false},
		{"GET " + z + "/operations/{name}", "compute.zoneOperations.get", e.getOp(zoneScope), false},
		{"POST " + z + "/operations/{name}/wait", "compute.zoneOperations.wait", e.waitOp(zoneScope), true},
		{"DELETE " + z + "/operations/{name}", "compute.zoneOperations.delete", e.deleteOp(zoneScope), false},
		{"GET " + r + "/operations", "compute.regionOperations.list", e.listOps(regionScope), false},
		{"GET " + r + "/operations/{name}", "compute.regionOperations.get", e.getOp(regionScope), false},
		{"POST " + r + "/operations/{name}/wait", "compute.regionOperations.wait", e.waitOp(regionScope), true},
		{"DELETE " + r + "/operations/{name}", "compute.regionOperations.delete", e.deleteOp(regionScope), false},
		{"GET " + g + "/operations", "compute.globalOperations.list", e.listOps(globalScope), false},
		{"GET " + g + "/operations/{name}", "compute.globalOperations.get", e.getOp(globalScope), false},
		{"POST " + g + "/operations/{name}/wait", "compute.globalOperations.wait", e.waitOp(globalScope), true},
		{"DELETE " + g + "/operations/{name}", "compute.globalOperations.delete", e.deleteOp(globalScope), false},

		// Cloud Resource Manager v1, enough for a preflight check.
		{"GET /v1/projects/{project}", "cloudresourcemanager.projects.get", e.crmGetProject, false},
		{"POST /v1/projects/{projectAction}", "cloudresourcemanager.projects.testIamPermissions", e.crmTestIamPermissions, false},
	} {
		e.mux.Handle(rt.pattern, e.api(rt.method, rt.h, rt.unlocked))
	}
	e.mux.HandleFunc("/compute/v1/", func(w http.ResponseWriter, r *http.Request) {
		(&apiError{http.StatusNotFound, "notFound", "global",
			"The emulator does not implement " + r.Method + " " + r.URL.Path}).write(w)
	})
	e.adminRoutes()
	e.identityRoutes()
}

// api wraps a handler with what every API call goes through: the project,
// zone validation, faults, locking and the JSON answer.
func (e *Emulator) api(method string, h handlerFunc, unlocked bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{r: r, method: method, zone: r.PathValue("zone"), region: r.PathValue("region"), urlPath: r.URL.Path}
		name := r.PathValue("project")
		if name == "" {
			name = projectOfAction(r.PathValue("projectAction"))
		}
		if c.zone != "" {
			c.region = zoneRegion(c.zone)
			if c.region == "" {
				(&apiError{http.StatusBadRequest, "invalid", "global",
					"Invalid value for field 'zone': '" + c.zone + "'. Unknown zone."}).write(w)
				return
			}
		} else if c.region != "" && !isRegion(c.region) {
			(&apiError{http.StatusBadRequest, "invalid", "global",
				"Invalid value for field 'region': '" + c.region + "'. Unknown region."}).write(w)
			return
		}
		fail, opFail := e.applyFaults(r.Context(), name, c.zone, method, answersWithOperation(r.Method, method))
		if fail != nil {
			fail.write(w)
			return
		}
		h, unlocked := h, unlocked // this call's
		if opFail != nil {
			h, unlocked = func(c *call) (any, error) { return e.failedOp(c, opFail) }, false
		}
		e.mu.Lock()
		locked := true
		// A handler that panics must not leave the emulator locked for
		// good: let go of the lock and answer as GCE answers its own bugs.
		defer func() {
			if locked {
				e.mu.Unlock()
			}
			if p := recover(); p != nil {
				e.log.Error("handler panicked", "method", method, "panic", p)
				errBackend(http.StatusInternalServerError).write(w)
			}
		}()
		if e.closed {
			e.mu.Unlock()
			locked = false
			errBackend(http.StatusServiceUnavailable).write(w)
			return
		}
		c.p = e.project(name)
		if unlocked {
			e.mu.Unlock()
			locked = false
			v, err := h(c)
			respond(w, v, err)
			return
		}
		v, err := h(c)
		if err != nil {
			e.mu.Unlock()
			locked = false
			respond(w, nil, err)
			return
		}
		// Encode while the lock is held: v may point into live state.
		b, encErr := encode(v)
		e.mu.Unlock()
		locked = false
		if encErr != nil {
			encErr.write(w)
			return
		}
		writeBytes(w, b)
	})
}

func respond(w http.ResponseWriter, v any, err error) {
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) {
			ae = &apiError{http.StatusInternalServerError, "backendError", "global", err.Error()}
		}
		ae.write(w)
		return
	}
	writeJSON(w, v)
}
