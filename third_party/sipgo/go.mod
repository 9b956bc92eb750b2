module github.com/emiago/sipgo

go 1.23.0

toolchain go1.24.2

require (
	github.com/gobwas/ws v1.3.2
	github.com/google/uuid v1.6.0
	github.com/icholy/digest v1.2.0
	golang.org/x/sync v0.16.0
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	github.com/gobwas/pool v0.2.1 // indirect
	github.com/google/go-cmp v0.6.0 // indirect
	golang.org/x/sys v0.24.0 // indirect
)
