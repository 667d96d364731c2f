"""promtext — a small, strict parser for the Prometheus text exposition
format (version 0.0.4), enough to check what keel's /metrics serves.

Every non-empty line must be a `# HELP name text`, a `# TYPE name type`,
another comment, or a sample `name{label="value",...} value [timestamp]`;
anything else raises ValueError, so a malformed exposition fails the test
that reads it.
"""
import math
import re

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(r"^(%s)(\{(.*)\})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$" % _NAME)
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"\s*(,|$)')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def _unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}.get(m.group(1), "\\" + m.group(1)), v)


def _parse_labels(text):
    labels = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m:
            raise ValueError("bad label set: {%s}" % text)
        if m.group(1) in labels:
            raise ValueError("duplicate label %s in {%s}" % (m.group(1), text))
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def _value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    return float(s)


class Sample:
    def __init__(self, name, labels, value):
        self.name, self.labels, self.value = name, labels, value

    def __repr__(self):
        return "%s%r %r" % (self.name, self.labels, self.value)


class Metrics:
    def __init__(self, text):
        self.samples = []
        self.types = {}
        self.helps = {}
        seen = set()
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3].strip() not in _TYPES:
                        raise ValueError("line %d: bad TYPE: %r" % (n, line))
                    if parts[2] in self.types:
                        raise ValueError("line %d: second TYPE for %s" % (n, parts[2]))
                    self.types[parts[2]] = parts[3].strip()
                elif len(parts) >= 3 and parts[1] == "HELP":
                    self.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise ValueError("line %d: not a sample: %r" % (n, line))
            labels = _parse_labels(m.group(3)) if m.group(2) else {}
            key = (m.group(1), tuple(sorted(labels.items())))
            if key in seen:
                raise ValueError("line %d: duplicate sample %r" % (n, line))
            seen.add(key)
            try:
                value = _value(m.group(4))
            except ValueError:
                raise ValueError("line %d: bad value: %r" % (n, line)) from None
            self.samples.append(Sample(m.group(1), labels, value))

    def find(self, name, **labels):
        """Samples named `name` whose labels include `labels`."""
        return [s for s in self.samples if s.name == name
                and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name, default=0.0, **labels):
        """The one sample named `name` with exactly these labels."""
        hits = [s for s in self.samples if s.name == name and s.labels == labels]
        assert len(hits) <= 1, hits
        return hits[0].value if hits else default

    def names(self):
        return {s.name for s in self.samples}

    def family_type(self, sample_name):
        """The TYPE declared for the family a sample belongs to."""
        if sample_name in self.types:
            return self.types[sample_name]
        for suffix in ("_bucket", "_sum", "_count", "_total", "_created"):
            if sample_name.endswith(suffix) and sample_name[: -len(suffix)] in self.types:
                return self.types[sample_name[: -len(suffix)]]
        return None


def parse(text):
    return Metrics(text)
