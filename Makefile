# imsec: the targets a developer and CI use. `make test` is the README's test command.
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 10s
BENCHTIME ?= 200ms

.PHONY: all build test race fuzz bench vet fmt-check cross demo clean

all: build

build:
	$(GO) build -o bin/imsec ./cmd/imsec

# The README's test command: every test, vet and format checks, and the
# cross builds the UEs need (macOS, Windows). Root-only tests skip with a
# message when not root.
test: fmt-check vet cross
	$(GO) test -count=1 -timeout 20m $(PKGS)

race:
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

# Every fuzz target of every package, each for FUZZTIME (bounded).
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# UEs run on macOS and Windows: the whole module must build there.
cross:
	GOOS=darwin  GOARCH=arm64 $(GO) build ./...
	GOOS=darwin  GOARCH=amd64 $(GO) build ./...
	GOOS=windows GOARCH=amd64 $(GO) build ./...
	GOOS=windows GOARCH=arm64 $(GO) build ./...
	GOARCH=arm64 $(GO) build ./...

demo:
	$(GO) run ./cmd/imsec demo

clean:
	rm -rf bin
