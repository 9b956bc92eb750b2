//go:build !unix

package sip

func setReuseAddr(uintptr) error { return nil }
