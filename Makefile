# imsec: the targets a developer and CI use. `make test` is the README's test command.
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 10s
BENCHTIME ?= 200ms
# staticcheck (honnef.co/go/tools): the version `make staticcheck` builds
# unless STATICCHECK names a binary, and the OSes it checks the module for
# (the UEs run on macOS and Windows too).
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK         ?=
STATICCHECK_GOOS    ?= linux darwin windows

.PHONY: all build test test-fork race fuzz fuzz-smoke staticcheck bench vet fmt-check cross demo charts clean

all: build

build:
	$(GO) build -o bin/imsec ./cmd/imsec

# The README's test command: every test, vet and format checks, and the
# cross builds the UEs need (macOS, Windows). Root-only tests skip with a
# message when not root.
test: fmt-check vet cross test-fork
	$(GO) test -count=1 -timeout 20m $(PKGS)

race:
	$(GO) test -race -count=1 -timeout 30m $(PKGS)
	cd third_party/sipgo && $(GO) test -race -count=1 -run Imsec ./sip/

# The vendored sipgo fork is a module of its own (./... does not reach it):
# its imsec changes have tests of their own (third_party/sipgo/IMSEC.md).
test-fork:
	cd third_party/sipgo && $(GO) vet ./sip/ && $(GO) test -count=1 -run Imsec ./sip/

# Every fuzz target of every package, each for FUZZTIME (bounded).
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# A bounded smoke run of every fuzz target for FUZZTIME each (5s unless
# given: make fuzz-smoke FUZZTIME=30s). Each package's test binary is built
# once, with the fuzzing instrumentation (go test -c -fuzz), and run once per
# target in the package's folder, where its testdata/fuzz seed corpus lives.
# A failure leaves the failing input in that corpus, as go test -fuzz does.
# A target that fails without leaving one (Go's fuzzer can report "context
# deadline exceeded" as its time runs out, seen on two of some fifty targets
# in one CI run) runs again, twice at most; a third such failure fails the
# run, and so does any failure that leaves an input.
fuzz-smoke: FUZZTIME = 5s
fuzz-smoke:
	@set -e; bin=$$(mktemp -d); trap 'rm -rf "$$bin"' EXIT; \
	cache=$$($(GO) env GOCACHE)/fuzz; \
	pkgs=$$($(GO) list -f '{{.ImportPath}} {{.Dir}}' $(PKGS)); \
	echo "$$pkgs" | while read -r pkg dir; do \
	  grep -qs '^func Fuzz' "$$dir"/*_test.go || continue; \
	  t="$$bin/$$(echo "$$pkg" | tr / _).test"; \
	  $(GO) test -c -fuzz . -o "$$t" "$$pkg"; \
	  targets=$$(cd "$$dir" && "$$t" -test.list '^Fuzz'); \
	  for f in $$targets; do \
	    echo "fuzz-smoke $$pkg $$f ($(FUZZTIME))"; \
	    run() { (cd "$$dir" && "$$t" -test.run '^$$' -test.fuzz "^$$f$$" -test.fuzztime $(FUZZTIME) \
	      -test.fuzzcachedir "$$cache/$$pkg" -test.timeout 10m); }; \
	    before=$$(ls "$$dir/testdata/fuzz/$$f" 2>/dev/null | wc -l); \
	    if ! run; then \
	      after=$$(ls "$$dir/testdata/fuzz/$$f" 2>/dev/null | wc -l); \
	      if [ "$$after" != "$$before" ]; then exit 1; fi; \
	      echo "fuzz-smoke: $$f failed without a failing input: once more"; \
	      if ! run; then \
	        after=$$(ls "$$dir/testdata/fuzz/$$f" 2>/dev/null | wc -l); \
	        if [ "$$after" != "$$before" ]; then exit 1; fi; \
	        echo "fuzz-smoke: $$f failed again without a failing input: a last time"; \
	        run; \
	      fi; \
	    fi; \
	  done; \
	done

# staticcheck's default checks over the whole module, tests included, once
# per OS in STATICCHECK_GOOS; any finding fails. Unless STATICCHECK names a
# binary, staticcheck STATICCHECK_VERSION is built from the Go module proxy
# into bin/ on first use.
staticcheck:
	@set -e; sc="$(STATICCHECK)"; \
	if [ -z "$$sc" ]; then \
	  sc="$(CURDIR)/bin/staticcheck-$(STATICCHECK_VERSION)/staticcheck"; \
	  [ -x "$$sc" ] || GOBIN="$$(dirname "$$sc")" $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); \
	fi; \
	for os in $(STATICCHECK_GOOS); do \
	  echo "staticcheck GOOS=$$os"; GOOS=$$os "$$sc" $(PKGS); \
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

# The README's charts (docs/charts/*.svg), drawn from the committed results
# files by 'imsec bench chart': nothing is measured again. A new run's
# --json results go into a new docs/results/DATE.json (the layout is
# bench/chart.Results); point these at it and run make charts.
CHARTS_TUNNEL ?= docs/results/2026-11-27.json
CHARTS_DATA   ?= docs/results/2026-12-07.json
charts: build
	bin/imsec bench chart --data $(CHARTS_TUNNEL) --chart tunnel --svg docs/charts/tunnel.svg
	bin/imsec bench chart --data $(CHARTS_DATA) --chart sizes --svg docs/charts/sizes.svg
	bin/imsec bench chart --data $(CHARTS_DATA) --chart register --svg docs/charts/register.svg

clean:
	rm -rf bin
