// A batch of packet reads or writes in one system call: an io_uring per TUN
// fd (ring.cc). Reading a packet from a TUN device and writing one back cost
// a system call each, and on the VMs hostlb is measured on a null system call
// takes about a microsecond (ten times bare metal), so under request/response
// load the per-packet calls were a fifth of hostlb's CPU. The ring carries the
// same readv(2)/writev(2), executed inline during io_uring_enter(2).

#pragma once

#include <stdint.h>
#include <sys/uio.h>

namespace hostlb {

struct Ring;

// Sets up a ring of `entries` submission slots (a power of two). Returns
// nullptr with errno set when the kernel or a sandbox refuses io_uring
// (ENOSYS before 5.1, EPERM under kernel.io_uring_disabled or seccomp).
Ring* RingOpen(unsigned entries);
void RingClose(Ring* ring);
unsigned RingEntries(const Ring* ring);

// Registers `fd` with the ring (IORING_REGISTER_FILES): operations on it
// then skip the per-operation file lookup and reference (fget/fput, about a
// fiftieth of hostlb's time under request/response load). False with errno
// set when the kernel refuses; the ring works as well without it.
bool RingRegisterFile(Ring* ring, int fd);

// Submits one writev per element of `vectors` (each `perOp` iovecs long)
// below `writes`, then one readv per element from there to `count`, against
// `fd`, in that order, and waits for all of them. Reads carry RWF_NOWAIT: an empty device answers -EAGAIN at once rather
// than leaving the read armed until a packet comes. results[i] gets each
// operation's result (bytes, or -errno; -EIO for one taken by the kernel
// that never reported back). Returns 0, or -errno when the batch could not
// be submitted at all (then nothing ran: the caller may do it another way).
// `count` must not exceed RingEntries.
int RingRun(Ring* ring, int fd, const struct iovec* vectors, unsigned perOp, unsigned writes, unsigned count, int32_t* results);

}  // namespace hostlb
