"""Helpers for rule evaluators (the ``rule-evaluator`` world).

The host compiles rules once, then sends ``SubjectBatch`` es. ``BatchView``
checks a batch and reads it; ``Matches`` builds the result bitmap;
``BatchBuilder`` makes batches for tests.

Batch layout (rules.wit): subject ``i``'s cells are
``cells[row_offsets[i]:row_offsets[i + 1]]``, sorted by ``attribute`` (an
index into ``attributes``). A text value is a ``Span`` of *byte* offsets into
the UTF-8 ``text`` arena. A text list is several cells with the same
attribute; a missing attribute (or an empty list) has no cell.

Result layout: ``matches`` is rule-major, ``words_per_rule =
ceil(subjects / 64)`` 64-bit words per rule, subject ``s`` is bit ``s % 64``
of word ``s // 64`` of its rule.
"""

from . import _wit
from .records import Timestamp


def _invalid(message):
    return _wit.err(_wit.export("rules").EvaluateError_InvalidBatch(message))


class BatchView:
    """A checked view of a ``SubjectBatch``. Construction raises
    ``Err(EvaluateError_InvalidBatch)`` for a malformed batch (offsets out
    of range, unknown attribute, a span outside the arena or inside a
    character), so reading never fails afterwards.

    Construction also reads every cell once, into one column per attribute:
    ``column(a)[s]`` is subject ``s``'s values of attribute ``a``. Reading a
    rule's attribute as a column is the fast way through a batch; the host
    sends up to 4,096 subjects a call, and Python's per-call CPU budget is
    the same as Rust's."""

    def __init__(self, batch):
        offsets = batch.row_offsets
        cells = batch.cells
        if len(offsets) == 0:
            raise _invalid("row-offsets must have subject-count + 1 entries")
        if offsets[0] != 0 or offsets[-1] != len(cells):
            raise _invalid("row-offsets must start at 0 and end at the number of cells")
        if any(a > b for a, b in zip(offsets, offsets[1:])):
            raise _invalid("row-offsets must not decrease")
        n = len(offsets) - 1
        self.batch = batch
        self.kind = batch.kind
        self.attributes = list(batch.attributes)
        self._n = n
        try:
            self._columns = _read(batch, n, len(self.attributes))
        except _Malformed as e:
            raise _invalid(str(e)) from None

    def __len__(self):
        """The number of subjects."""
        return self._n

    def attribute_index(self, name):
        """The index of attribute ``name`` in this batch; ``None`` when no
        subject of the batch has it."""
        try:
            return self.attributes.index(name)
        except ValueError:
            return None

    def column(self, attribute):
        """Every subject's values of attribute index ``attribute``: a list
        with one entry per subject, ``None`` where the subject lacks it, else
        a list of its values (several for a text list). Do not change it."""
        return self._columns[attribute]

    def subject(self, i):
        """Subject ``i`` (``IndexError`` past the end)."""
        if not 0 <= i < self._n:
            raise IndexError(i)
        return SubjectView(self, i)


class _Malformed(Exception):
    pass


def _read(batch, n, n_attributes):
    """One pass over the cells: checks them and returns the columns."""
    rules = _wit.export("rules")
    Text, Timestamp_ = rules.CellValue_Text, rules.CellValue_Timestamp
    cells = batch.cells
    offsets = batch.row_offsets
    text = batch.text
    # Spans are byte offsets into the UTF-8 arena: an ASCII arena can be
    # sliced as it is; any other is sliced as bytes and decoded.
    arena = text if text.isascii() else None
    data = text.encode("utf-8") if arena is None else None
    size = len(text) if arena is not None else len(data)
    columns = [[None] * n for _ in range(n_attributes)]
    for s in range(n):
        for c in range(offsets[s], offsets[s + 1]):
            cell = cells[c]
            v = cell.value
            kind = type(v)
            if kind is Text:
                span = v.value
                start = span.offset
                end = start + span.len
                if end > size:
                    raise _Malformed("cell %d has a text span outside the text arena" % c)
                if arena is not None:
                    v = arena[start:end]
                else:
                    try:
                        v = data[start:end].decode("utf-8")
                    except UnicodeDecodeError:
                        raise _Malformed("cell %d has a text span inside a character" % c) from None
            elif kind is Timestamp_:
                v = Timestamp(v.value)
            else:
                v = v.value
            a = cell.attribute
            if a >= n_attributes:
                raise _Malformed(
                    "cell %d refers to attribute %d of %d" % (c, a, n_attributes)
                )
            column = columns[a]
            values = column[s]
            if values is None:
                column[s] = [v]
            else:
                values.append(v)
    return columns


class SubjectView:
    """One subject of a ``BatchView``."""

    def __init__(self, view, index):
        self._view = view
        self._index = index

    def values(self, attribute):
        """The values of attribute index ``attribute``: ``[]`` when the
        subject lacks it, several for a text list. Text is ``str``, numbers
        ``float``, booleans ``bool``, timestamps ``Timestamp``."""
        return list(self._view._columns[attribute][self._index] or ())

    def has(self, attribute):
        """Whether the subject has attribute index ``attribute`` at all."""
        return self._view._columns[attribute][self._index] is not None

    def as_dict(self):
        """``{attribute name: value}`` (a list for a text list), for tests and logs."""
        out = {}
        for a, name in enumerate(self._view.attributes):
            values = self._view._columns[a][self._index]
            if values is not None:
                out[name] = values[0] if len(values) == 1 else list(values)
        return out


class Matches:
    """The match bitmap of an ``Evaluation``, built one bit at a time."""

    def __init__(self, rules, subjects):
        self.words_per_rule = (subjects + 63) // 64
        self.words = [0] * (rules * self.words_per_rule)

    def set(self, rule, subject):
        """Mark ``subject`` as matching ``rule``."""
        self.words[rule * self.words_per_rule + subject // 64] |= 1 << (subject % 64)

    def set_many(self, rule, subjects):
        """Mark every subject index in ``subjects`` as matching ``rule``."""
        words = self.words
        base = rule * self.words_per_rule
        for s in subjects:
            words[base + (s >> 6)] |= 1 << (s & 63)

    def get(self, rule, subject):
        """Whether ``subject`` matches ``rule``."""
        return bool(self.words[rule * self.words_per_rule + subject // 64] >> (subject % 64) & 1)

    def matching(self, rule):
        """The indexes of the subjects that match ``rule``, in order."""
        base = rule * self.words_per_rule
        out = []
        for w in range(self.words_per_rule):
            word = self.words[base + w]
            for bit in range(64):
                if word >> bit & 1:
                    out.append(w * 64 + bit)
        return out

    def evaluation(self, explanations=(), errors=()):
        """The finished ``Evaluation``."""
        return _wit.export("rules").Evaluation(
            matches=list(self.words),
            words_per_rule=self.words_per_rule,
            explanations=list(explanations),
            errors=list(errors),
        )

    @classmethod
    def from_evaluation(cls, evaluation):
        """Read the bitmap of an ``Evaluation``."""
        m = cls(0, 0)
        m.words = list(evaluation.matches)
        m.words_per_rule = evaluation.words_per_rule
        return m


def _kind(kind):
    if isinstance(kind, str):
        return _wit.types().SubjectKind[kind.upper()]
    return kind


class BatchBuilder:
    """Builds a ``SubjectBatch``, for tests of an evaluator.

        batch = BatchBuilder("user").push({"department": "Sales"}).push({}).build()

    Values: ``str`` (text), ``list`` of ``str`` (text list), ``bool``,
    ``int`` / ``float`` (number), ``Timestamp``; ``None`` is no cell."""

    def __init__(self, kind="user"):
        self._kind = _kind(kind)
        self._attributes = []
        self._text = bytearray()
        self._offsets = [0]
        self._cells = []

    def _attribute(self, name):
        if name not in self._attributes:
            self._attributes.append(name)
        return self._attributes.index(name)

    def _cell(self, attribute, v):
        rules = _wit.export("rules")
        if isinstance(v, str):
            data = v.encode("utf-8")
            span = rules.Span(offset=len(self._text), len=len(data))
            self._text += data
            value = rules.CellValue_Text(span)
        elif isinstance(v, bool):
            value = rules.CellValue_Boolean(v)
        elif isinstance(v, Timestamp):
            value = rules.CellValue_Timestamp(int(v))
        elif isinstance(v, (int, float)):
            value = rules.CellValue_Number(float(v))
        else:
            raise TypeError("%r cannot be a cell value" % (v,))
        return rules.Cell(attribute=attribute, value=value)

    def push(self, attributes):
        """Add one subject with ``attributes`` (a dict)."""
        row = []
        for name, v in attributes.items():
            if v is None:
                continue
            index = self._attribute(name)
            for item in v if isinstance(v, (list, tuple)) else [v]:
                row.append(self._cell(index, item))
        row.sort(key=lambda c: c.attribute)
        self._cells += row
        self._offsets.append(len(self._cells))
        return self

    def build(self):
        """The finished ``SubjectBatch``."""
        return _wit.export("rules").SubjectBatch(
            kind=self._kind,
            attributes=list(self._attributes),
            text=self._text.decode("utf-8"),
            row_offsets=list(self._offsets),
            cells=list(self._cells),
        )
