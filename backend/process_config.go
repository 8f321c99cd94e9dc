package backend

// processConfig is the process-config step of Reload: it parses and
// checks the file import-config read, and refuses a deployment name other
// than the one the jobs work for.
func (b *Backend) processConfig(data []byte) (Config, error) {
	cfg, err := ParseConfig(b.opts.ConfigPath, data)
	if err == nil && b.identified() {
		// Another name would orphan everything the deployment made.
		err = sameDeployment(b.jobs.Deployment(), cfg.Settings.Deployment)
	}
	return cfg, err
}

// identified says whether the jobs' deployment is the store's (or there
// is no store).
func (b *Backend) identified() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opts.Deployment != "" || b.opts.Store == nil
}
