package emulator

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// The Cloud Resource Manager v1 calls a preflight check needs: projects.get
// for the project number and projects.testIamPermissions. Every permission
// is granted unless DenyPermissions withheld it.

// DenyPermissions makes testIamPermissions withhold perms in project; with no
// perms it grants everything again.
func (e *Emulator) DenyPermissions(project string, perms ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.project(project)
	p.denied = map[string]bool{}
	for _, perm := range perms {
		p.denied[perm] = true
	}
}

func projectOfAction(s string) string {
	name, _, _ := strings.Cut(s, ":")
	return name
}

func (e *Emulator) crmGetProject(c *call) (any, error) {
	return map[string]any{
		"projectNumber":  strconv.FormatInt(c.p.number, 10),
		"projectId":      c.p.name,
		"lifecycleState": "ACTIVE",
		"name":           c.p.name,
		"createTime":     c.p.created.UTC().Format("2006-01-02T15:04:05.000Z"),
	}, nil
}

func (e *Emulator) crmTestIamPermissions(c *call) (any, error) {
	if !strings.HasSuffix(c.param("projectAction"), ":testIamPermissions") {
		return nil, &apiError{http.StatusNotFound, "notFound", "global", "The emulator does not implement POST " + c.urlPath}
	}
	var req struct {
		Permissions []string `json:"permissions"`
	}
	if err := readJSON(c.r, &req); err != nil {
		return nil, err
	}
	granted := []string{}
	for _, perm := range req.Permissions {
		if !c.p.denied[perm] && !slices.Contains(granted, perm) {
			granted = append(granted, perm)
		}
	}
	if len(granted) == 0 {
		return map[string]any{}, nil
	}
	return map[string]any{"permissions": granted}, nil
}
