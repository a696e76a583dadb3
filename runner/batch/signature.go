package batch

import (
	"strconv"
	"strings"
)

// Signature identifies the shape of a batch: its column names and types and, when formats is
// not nil, the wire format of each column. Sinks key the statements and encoders they prepare
// by it, so a batch of a new shape gets its own instead of a wrong one.
func Signature(cols []Column, formats []int16) string {
	var b strings.Builder
	for i, c := range cols {
		b.WriteString(c.Name)
		b.WriteByte(0)
		b.WriteString(strconv.FormatUint(uint64(c.Type), 10))
		if formats != nil {
			b.WriteByte('/')
			b.WriteString(strconv.Itoa(int(formats[i])))
		}
		b.WriteByte(0)
	}
	return b.String()
}
