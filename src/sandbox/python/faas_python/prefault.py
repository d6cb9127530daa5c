"""Copying ahead the pages a run writes, so the run itself takes no copy-on-write faults.

A run child shares every page with its zygote until it writes one; the first write to each
page is a copy-on-write fault. Python writes wherever it reads (reference counts), so even a
trivial run writes hundreds of pages. On this VM a fault costs ≈ 25 µs and madvise
(MADV_POPULATE_WRITE) copies a page for ≈ 5 µs, in one call for a whole range.

So each zygote learns once which pages a run writes (a rehearsal: a child runs a canned job
that holds no one's data, then lists the pages it owns alone, from /proc/self/pagemap), and
each run child copies those pages with a few madvise calls while it waits for its job.
"""

import ctypes
import mmap
import struct

MADV_POPULATE_WRITE = 23  # Linux 5.14
PAGE = 4096
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_EXCLUSIVE = 1 << 56
MERGE_GAP_PAGES = 1  # copying a few pages more is cheaper than one more call
MAX_PAGES = 4096  # 16 MiB: a bound on what one child copies ahead (≈ 1000 measured)

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def private_writable_ranges(maps_text):
    """(start, end) of the anonymous private writable mappings in /proc/self/maps text: the
    heap, the stack and anonymous maps (Python's arenas), where a forked child's writes go."""
    ranges = []
    for line in maps_text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[1] != "rw-p":
            continue
        name = fields[5] if len(fields) > 5 else ""
        if name and name not in ("[heap]", "[stack]"):
            continue
        start, end = (int(part, 16) for part in fields[0].split("-"))
        ranges.append((start, end))
    return ranges


def owned_pages(ranges, pagemap):
    """Addresses of the pages in `ranges` that are present and mapped by this process alone,
    read from the open /proc/self/pagemap file `pagemap`."""
    pages = []
    for start, end in ranges:
        pagemap.seek((start // PAGE) * 8)
        data = pagemap.read(((end - start) // PAGE) * 8)
        for index, (entry,) in enumerate(struct.iter_unpack("Q", data)):
            if entry & PAGEMAP_PRESENT and entry & PAGEMAP_EXCLUSIVE:
                pages.append(start + index * PAGE)
    return pages


def coalesce(pages, gap=MERGE_GAP_PAGES, limit=MAX_PAGES):
    """Sorted page addresses as (start, length) ranges, joining ranges at most `gap` pages
    apart, keeping at most `limit` pages in all."""
    spans = []
    total = 0
    for page in sorted(pages):
        if spans and page - (spans[-1][0] + spans[-1][1]) <= gap * PAGE:
            grown = page + PAGE - spans[-1][0]
            total += (grown - spans[-1][1]) // PAGE
            spans[-1][1] = grown
        else:
            spans.append([page, PAGE])
            total += 1
        if total >= limit:
            break
    return [(start, length) for start, length in spans]


class Measure:
    """Opens this process's maps and pagemap now (a process that leaves root can no longer
    open them), to list the pages it owns alone later, as coalesced ranges."""

    def __init__(self):
        self.maps = open("/proc/self/maps", "rb", buffering=0)
        self.pagemap = open("/proc/self/pagemap", "rb", buffering=0)

    def __call__(self):
        text = b""
        while chunk := self.maps.read(65536):
            text += chunk
        return coalesce(owned_pages(private_writable_ranges(text.decode()), self.pagemap))


def supported():
    """True where the kernel copies pages ahead on request (MADV_POPULATE_WRITE)."""
    page = mmap.mmap(-1, PAGE)
    try:
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        return _LIBC.madvise(address, PAGE, MADV_POPULATE_WRITE) == 0
    finally:
        page.close()


class Prefault:
    """Copies the given ranges into the calling process with one madvise call each."""

    def __init__(self, spans):
        self.spans = tuple((ctypes.c_void_p(start), ctypes.c_size_t(length))
                           for start, length in spans)
        self.pages = sum(length for _, length in spans) // PAGE

    def __call__(self):
        madvise = _LIBC.madvise
        for start, length in self.spans:
            madvise(start, length, MADV_POPULATE_WRITE)  # a range gone since is skipped
