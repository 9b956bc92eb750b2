//go:build race

package bench

// raceEnabled: under the race detector sync.Pool drops items at random, so
// allocation budgets cannot be measured.
const raceEnabled = true
