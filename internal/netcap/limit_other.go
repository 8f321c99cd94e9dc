//go:build !unix

package netcap

// descriptorLimit returns the descriptor limit where the system does not
// tell it.
func descriptorLimit() int { return 4096 }
