package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"

	compute "google.golang.org/api/compute/v1"
)

// apiError is an error answered synchronously as an HTTP status with GCE's
// JSON error body, which both official clients decode into googleapi.Error.
type apiError struct {
	code    int
	reason  string
	domain  string
	message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.code, e.reason, e.message) }

func (e *apiError) write(w http.ResponseWriter) {
	body := map[string]any{
		"error": map[string]any{
			"code":    e.code,
			"message": e.message,
			"errors": []map[string]string{{
				"message": e.message,
				"domain":  e.domain,
				"reason":  e.reason,
			}},
		},
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(e.code)
	json.NewEncoder(w).Encode(body)
}

func errNotFound(path string) *apiError {
	return &apiError{http.StatusNotFound, "notFound", "global", fmt.Sprintf("The resource '%s' was not found", path)}
}

func errAlreadyExists(path string) *apiError {
	return &apiError{http.StatusConflict, "alreadyExists", "global", fmt.Sprintf("The resource '%s' already exists", path)}
}

func errInvalidField(field string, value any, why string) *apiError {
	return &apiError{http.StatusBadRequest, "invalid", "global",
		fmt.Sprintf("Invalid value for field '%s': '%v'. %s", field, value, why)}
}

func errInvalid(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "invalid", "global", fmt.Sprintf(format, args...)}
}

func errBadRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "badRequest", "global", fmt.Sprintf(format, args...)}
}

func errConditionNotMet(what string) *apiError {
	return &apiError{http.StatusPreconditionFailed, "conditionNotMet", "global",
		fmt.Sprintf("Supplied fingerprint does not match current %s fingerprint.", what)}
}

func errInUse(path, user string) *apiError {
	return &apiError{http.StatusBadRequest, "resourceInUseByAnotherResource", "global",
		fmt.Sprintf("The %s resource '%s' is already being used by '%s'", kindOfPath(path), path, user)}
}

func errRateLimit(code int) *apiError {
	reason := "rateLimitExceeded"
	if code == http.StatusTooManyRequests {
		reason = "userRateLimitExceeded"
	}
	return &apiError{code, reason, "usageLimits", "Rate Limit Exceeded"}
}

func errBackend(code int) *apiError {
	reason := "backendError"
	msg := "Internal error. Please try again or contact Google Support."
	if code == http.StatusServiceUnavailable {
		reason = "unavailable"
		msg = "The service is currently unavailable."
	}
	return &apiError{code, reason, "global", msg}
}

// opError is a failure reported inside a DONE operation, as GCE reports
// quota, stockout and most asynchronous failures.
type opError struct {
	code     string // e.g. QUOTA_EXCEEDED
	message  string
	httpCode int64 // the operation's httpErrorStatusCode
	details  []*compute.OperationErrorErrorsErrorDetails
}

func (e *opError) Error() string { return e.code + ": " + e.message }

func opQuotaExceeded(metric, region string, limit, usage, want float64) *opError {
	return &opError{
		code:     "QUOTA_EXCEEDED",
		message:  fmt.Sprintf("Quota '%s' exceeded.  Limit: %.1f in region %s.", metric, limit, region),
		httpCode: http.StatusForbidden,
		details: []*compute.OperationErrorErrorsErrorDetails{{
			QuotaInfo: &compute.QuotaExceededInfo{
				MetricName: "compute.googleapis.com/" + metricName(metric),
				LimitName:  metricName(metric) + "-per-project-region",
				Limit:      limit,
				Dimensions: map[string]string{"region": region},
			},
		}},
	}
}

func opStockout(project, zone string) *opError {
	return &opError{
		code: "ZONE_RESOURCE_POOL_EXHAUSTED",
		message: fmt.Sprintf("The zone 'projects/%s/zones/%s' does not have enough resources available to fulfill the request.  "+
			"Try a different zone, or try again later.", project, zone),
		httpCode: http.StatusServiceUnavailable,
	}
}

func opNotFound(path string) *opError {
	return &opError{code: "RESOURCE_NOT_FOUND", message: fmt.Sprintf("The resource '%s' was not found", path), httpCode: http.StatusNotFound}
}

func opInvalid(msg string) *opError {
	return &opError{code: "INVALID_FIELD_VALUE", message: msg, httpCode: http.StatusBadRequest}
}

func metricName(metric string) string {
	switch metric {
	case "CPUS":
		return "cpus"
	case "INSTANCES":
		return "instances"
	case "IN_USE_ADDRESSES":
		return "in_use_addresses"
	}
	return metric
}

func httpStatusText(code int64) string {
	switch code {
	case http.StatusForbidden:
		return "FORBIDDEN"
	case http.StatusServiceUnavailable:
		return "SERVICE UNAVAILABLE"
	case http.StatusNotFound:
		return "NOT FOUND"
	case http.StatusBadRequest:
		return "BAD REQUEST"
	case http.StatusConflict:
		return "CONFLICT"
	}
	return "ERROR"
}
