//go:build !unix

package connlimit

// fdLimit is unknown here: the total cap keeps DefaultMaxConns.
func fdLimit() uint64 { return 0 }
