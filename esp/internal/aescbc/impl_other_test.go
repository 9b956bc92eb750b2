//go:build !amd64 || purego

package aescbc

// asmImpl is nil: this build has no assembly path.
func asmImpl() *impl { return nil }
