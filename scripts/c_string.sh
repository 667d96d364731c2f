# c_string.sh — sourced by scripts/embed_*.sh: `c_string FILE WHO END`
# prints FILE as C string-literal lines (one per input line, escaped, no
# trigraphs), the last followed by END (e.g. "," or ""). WHO names the
# caller in errors; a NUL byte in FILE is an error (exit 1).
c_string() {
	od -An -v -tu1 "$1" | awk -v file="$1" -v who="$2" -v end="$3" '
		BEGIN { line = "        \"" }
		{
			for (i = 1; i <= NF; i++) {
				c = $i + 0
				if (c == 0) { print who ": " file ": NUL byte" > "/dev/stderr"; exit 1 }
				if (c == 92) s = "\\\\"
				else if (c == 34) s = "\\\""
				else if (c == 63) s = "\\?"          # no trigraphs
				else if (c == 10) s = "\\n"
				else if (c == 9) s = "\\t"
				else if (c < 32 || c > 126) s = sprintf("\\%03o", c)
				else s = sprintf("%c", c)
				line = line s
				if (c == 10) { print line "\""; line = "        \"" }
			}
		}
		END { print line "\"" end }'
}
