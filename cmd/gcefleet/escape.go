package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// clean makes text from a server safe to print on a terminal: control
// and format characters (escape sequences, line breaks, tabs, bidi
// overrides) and invalid UTF-8 are written as Go escapes (\x1b, \u202e),
// so a backend cannot move the cursor, recolour a client's screen or
// forge lines of its table.
func clean(s string) string { return escape(s, false) }

// cleanLines is clean that keeps line breaks, for messages of several
// lines such as the errors gcefleet prints.
func cleanLines(s string) string { return escape(s, true) }

func escape(s string, keepLines bool) string {
	safe := func(r rune) bool { return r == ' ' || unicode.IsPrint(r) || keepLines && r == '\n' }
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !safe(r) }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case safe(r):
			b.WriteRune(r)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += n
	}
	return b.String()
}
