//go:build !race

package rangestream

const raceEnabled = false
