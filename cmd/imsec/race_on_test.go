//go:build race

package main

// raceEnabled: under the race detector sync.Pool drops items at random, so
// allocation counts cannot be checked.
const raceEnabled = true
