package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/cloudresourcemanager/v1"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// neededPermissions are what the gce system and gc use, with the role that
// grants each (the roles the README's setup steps grant).
var neededPermissions = map[string]string{
	"compute.instances.create":              "roles/compute.instanceAdmin.v1",
	"compute.instances.delete":              "roles/compute.instanceAdmin.v1",
	"compute.instances.get":                 "roles/compute.instanceAdmin.v1",
	"compute.instances.list":                "roles/compute.instanceAdmin.v1",
	"compute.instances.setMetadata":         "roles/compute.instanceAdmin.v1",
	"compute.instances.setLabels":           "roles/compute.instanceAdmin.v1",
	"compute.instances.setTags":             "roles/compute.instanceAdmin.v1",
	"compute.instances.getSerialPortOutput": "roles/compute.instanceAdmin.v1",
	"compute.machineTypes.get":              "roles/compute.instanceAdmin.v1",
	"compute.zoneOperations.get":            "roles/compute.instanceAdmin.v1",
	"compute.firewalls.create":              "roles/compute.securityAdmin",
	"compute.firewalls.delete":              "roles/compute.securityAdmin",
	"compute.globalOperations.get":          "roles/compute.securityAdmin",
	"iam.serviceAccounts.actAs":             "roles/iam.serviceAccountUser",
}

// projectID is the form of a Google Cloud project id, as bigpi (system/gce)
// and gc check it: 6-30 characters.
var projectID = regexp.MustCompile(`^[a-z][-a-z0-9]{4,28}[a-z0-9]$`)

func doctorCommand() *command {
	return &command{
		name:    "doctor",
		summary: "check credentials, APIs and IAM permissions",
		usage:   "--project P",
		help: `Checks what running bigmachine on Compute Engine needs: credentials, that the
Cloud Resource Manager and Compute Engine APIs answer, and that the caller
holds each permission the gce system uses. For each problem it prints the
gcloud command that fixes it, and it exits non-zero if there is any.

Example:
  gcefleet doctor --project my-project`,
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			project := fs.String("project", "", "Google Cloud `project`")
			endpoint := fs.String("compute-endpoint", "", "API base `URL`; empty is real Google Cloud, http://127.0.0.1:8780 the emulator")
			return func(ctx context.Context, env *environ, args []string) error {
				if *project == "" {
					return usagef("doctor: --project is required (or GCEFLEET_PROJECT)")
				}
				return doctor(ctx, env, *project, *endpoint)
			}
		},
	}
}

func doctor(ctx context.Context, env *environ, project, endpoint string) error {
	problems := 0
	ok := func(format string, args ...any) { fmt.Fprintf(env.stdout, "ok    "+format+"\n", args...) }
	bad := func(fix string, format string, args ...any) {
		problems++
		fmt.Fprintf(env.stdout, "FAIL  "+format+"\n", args...)
		if fix != "" {
			fmt.Fprintf(env.stdout, "      fix: %s\n", fix)
		}
	}

	// A name that cannot be a project id (a display name, a number) would
	// only fail every check below with the API's words.
	if !projectID.MatchString(project) {
		bad("gcloud projects list (its PROJECT_ID column)", "project %q is not a project id: 6-30 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen", project)
		return fmt.Errorf("doctor: 1 problem")
	}
	c, err := gcecompute.NewClient(ctx, endpoint)
	if err != nil {
		bad("gcloud auth application-default login", "credentials: %v", err)
		return fmt.Errorf("doctor: 1 problem")
	}
	defer c.Close()
	ok("credentials")

	opts := []option.ClientOption{option.WithScopes(cloudresourcemanager.CloudPlatformReadOnlyScope)}
	if endpoint != "" {
		opts = []option.ClientOption{option.WithEndpoint(strings.TrimSuffix(endpoint, "/") + "/"), option.WithoutAuthentication()}
	}
	crm, err := cloudresourcemanager.NewService(ctx, opts...)
	if err != nil {
		return err
	}
	if p, err := crm.Projects.Get(project).Context(ctx).Do(); err != nil {
		bad("gcloud services enable cloudresourcemanager.googleapis.com --project "+project, "Cloud Resource Manager API: project %s: %v", project, err)
	} else {
		ok("project %s (number %d, %s)", p.ProjectId, p.ProjectNumber, p.LifecycleState)
	}

	it := c.Instances.AggregatedList(ctx, &computepb.AggregatedListInstancesRequest{Project: project, MaxResults: new(uint32(1))})
	if _, err := it.Next(); err != nil && !errors.Is(err, iterator.Done) {
		fix := "gcloud services enable compute.googleapis.com --project " + project
		bad(fix, "Compute Engine API: %v", err)
	} else {
		ok("Compute Engine API answers")
	}

	var perms []string
	for p := range neededPermissions {
		perms = append(perms, p)
	}
	sort.Strings(perms)
	resp, err := crm.Projects.TestIamPermissions(project, &cloudresourcemanager.TestIamPermissionsRequest{Permissions: perms}).Context(ctx).Do()
	if err != nil {
		bad("", "testing permissions: %v", err)
	} else {
		held := map[string]bool{}
		for _, p := range resp.Permissions {
			held[p] = true
		}
		missingRoles := map[string][]string{}
		for _, p := range perms {
			if !held[p] {
				missingRoles[neededPermissions[p]] = append(missingRoles[neededPermissions[p]], p)
			}
		}
		if len(missingRoles) == 0 {
			ok("all %d permissions the gce system uses", len(perms))
		}
		var roles []string
		for r := range missingRoles {
			roles = append(roles, r)
		}
		sort.Strings(roles)
		for _, r := range roles {
			bad(fmt.Sprintf(`gcloud projects add-iam-policy-binding %s --member="user:$(gcloud config get-value account)" --role=%s`, project, r),
				"missing %s", strings.Join(missingRoles[r], ", "))
		}
	}
	if problems > 0 {
		return fmt.Errorf("doctor: %s", plural(problems, "problem"))
	}
	fmt.Fprintln(env.stdout, "all good")
	return nil
}
