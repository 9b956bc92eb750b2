// Package bench holds imsec's end-to-end benchmarks and the comparison
// harness behind `imsec bench`. Unit benchmarks live beside their code
// (for example esp/internal/aescbc); this package measures whole paths and
// compares them with what Go's standard library primitives do for the same
// job, in the same run, so that a ratio means something on any machine.
//
// RunCodec measures the ESP codec (RFC 4303 Seal/Open from package esp) for
// each algorithm suite and packet size, with a fixed time budget per
// measurement.
package bench
