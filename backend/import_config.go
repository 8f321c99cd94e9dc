package backend

import (
	"crypto/sha256"
	"os"
)

// importConfig is the import-config step of Reload: it reads the
// configuration file and says whether it changed since it was last read
// (a file refused then counts as changed, so that it is checked again).
func (b *Backend) importConfig() (data []byte, changed bool, err error) {
	data, err = os.ReadFile(b.opts.ConfigPath)
	if err != nil {
		return nil, true, err
	}
	h := sha256.Sum256(data)
	b.mu.Lock()
	same := h == b.hash && b.configErr == nil
	b.hash = h
	b.mu.Unlock()
	return data, !same, nil
}
