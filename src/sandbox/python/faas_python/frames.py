"""Frames between the service and a Python zygote, on the zygote's connection.

A frame is a 16-byte header, big-endian: kind (1 byte), stream (1 byte), flags (2 bytes),
run number (4 bytes), argument (4 bytes), payload length (4 bytes); then the payload. The
zygote never reads a payload: it splices the bytes between the connection and the run's pipes,
so no run's code, input or output ever passes through its memory.
"""

import struct

HEADER = struct.Struct(">BBHIII")

# Service -> zygote.
RUN = 1  # argument: timeout in ms; payload: the job (JSON), for the run's own stdin pipe
STOP = 2  # end the run now

# Zygote -> service.
READY = 10  # a run child is forked, jailed and waiting
OUT = 11  # stream 1 stdout, 2 stderr, 3 the run's report; payload: the bytes
EXIT = 12  # argument: the wait status; flags below

TIMED_OUT = 1  # the run overstayed its timeout and was stopped
OOM = 2  # the kernel killed something in the slot for memory during the run
STOPPED = 4  # the service asked to stop it


def pack(kind, run=0, stream=0, flags=0, argument=0, length=0):
    """One header."""
    return HEADER.pack(kind, stream, flags, run, argument, length)


def unpack(data):
    """(kind, stream, flags, run, argument, length) of a header."""
    return HEADER.unpack(data)
