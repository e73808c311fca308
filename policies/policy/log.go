package policy

import "fmt"

// Log levels of the metastore.log import.
const (
	LevelDebug int32 = 0
	LevelInfo  int32 = 1
	LevelWarn  int32 = 2
	LevelError int32 = 3
)

// Log sends a line to the server log, tagged with the policy's name. The
// host rate-limits it; keep it off the hot path.
func Log(level int32, msg string) { writeLog(level, msg) }

// Logf formats and logs a line.
func Logf(level int32, format string, args ...any) { writeLog(level, fmt.Sprintf(format, args...)) }
