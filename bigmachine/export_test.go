package bigmachine

// WithCompressor makes the driver compress its binary with f instead of
// zstd, so that a test can count compressions or make one fail.
func WithCompressor(f func(path string) ([]byte, error)) Option {
	return func(b *B) { b.compressFile = f }
}
