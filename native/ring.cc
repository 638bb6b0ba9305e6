// The io_uring behind ring.h, by raw system calls (no liburing: one fewer
// thing for `npm install` to build). The rings are the kernel's layout
// (linux/io_uring.h): hostlb fills submission entries and moves the SQ tail,
// the kernel moves the CQ tail; each RingRun drains every completion it
// caused before it returns, so a ring never holds work between calls and
// the caller's memory is never touched after RingRun returns.

#include "ring.h"

#include <errno.h>
#include <linux/fs.h>
#include <linux/io_uring.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace hostlb {

struct Ring {
  int fd = -1;
  unsigned entries = 0;
  void* rings = MAP_FAILED;
  size_t ringsSize = 0;
  void* cqMap = MAP_FAILED;  // only without IORING_FEAT_SINGLE_MMAP
  size_t cqMapSize = 0;
  io_uring_sqe* sqes = static_cast<io_uring_sqe*>(MAP_FAILED);
  size_t sqesSize = 0;
  unsigned *sqHead, *sqTail, *sqMask, *sqArray;
  unsigned *cqHead, *cqTail, *cqMask;
  io_uring_cqe* cqes;
  int registeredFd = -1;  // RingRegisterFile's fd: fixed-file slot 0
};

namespace {

int Setup(unsigned entries, io_uring_params* params) {
  return static_cast<int>(syscall(__NR_io_uring_setup, entries, params));
}

int Enter(int fd, unsigned toSubmit, unsigned minComplete) {
  return static_cast<int>(syscall(__NR_io_uring_enter, fd, toSubmit, minComplete, IORING_ENTER_GETEVENTS, nullptr, 0));
}

template <typename T>
T* At(void* base, uint32_t offset) {
  return reinterpret_cast<T*>(static_cast<uint8_t*>(base) + offset);
}

}  // namespace

Ring* RingOpen(unsigned entries) {
  // Completions are only reaped inside io_uring_enter by the thread that
  // submits (DEFER_TASKRUN, which needs SINGLE_ISSUER): no interrupt of
  // hostlb's thread to run them. Kernels before 6.1 refuse those flags; then
  // a plain ring does the same work, completing inline as well.
  const unsigned preferred[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL, 0};
  io_uring_params params;
  int fd = -1;
  for (unsigned flags : preferred) {
    memset(&params, 0, sizeof params);
    params.flags = flags;
    fd = Setup(entries, &params);
    if (fd >= 0 || errno != EINVAL) break;
  }
  if (fd < 0) return nullptr;

  Ring* ring = new Ring();
  ring->fd = fd;
  ring->entries = params.sq_entries;
  size_t sqSize = params.sq_off.array + params.sq_entries * sizeof(unsigned);
  size_t cqSize = params.cq_off.cqes + params.cq_entries * sizeof(io_uring_cqe);
  bool single = (params.features & IORING_FEAT_SINGLE_MMAP) != 0;
  ring->ringsSize = single && cqSize > sqSize ? cqSize : sqSize;
  ring->rings = mmap(nullptr, ring->ringsSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  void* cq = ring->rings;
  if (ring->rings != MAP_FAILED && !single) {
    ring->cqMapSize = cqSize;
    ring->cqMap = mmap(nullptr, cqSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    cq = ring->cqMap;
  }
  ring->sqesSize = params.sq_entries * sizeof(io_uring_sqe);
  ring->sqes = static_cast<io_uring_sqe*>(
      mmap(nullptr, ring->sqesSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES));
  if (ring->rings == MAP_FAILED || cq == MAP_FAILED || ring->sqes == MAP_FAILED) {
    int err = errno;
    RingClose(ring);
    errno = err;
    return nullptr;
  }
  ring->sqHead = At<unsigned>(ring->rings, params.sq_off.head);
  ring->sqTail = At<unsigned>(ring->rings, params.sq_off.tail);
  ring->sqMask = At<unsigned>(ring->rings, params.sq_off.ring_mask);
  ring->sqArray = At<unsigned>(ring->rings, params.sq_off.array);
  ring->cqHead = At<unsigned>(cq, params.cq_off.head);
  ring->cqTail = At<unsigned>(cq, params.cq_off.tail);
  ring->cqMask = At<unsigned>(cq, params.cq_off.ring_mask);
  ring->cqes = At<io_uring_cqe>(cq, params.cq_off.cqes);
  return ring;
}

void RingClose(Ring* ring) {
  if (ring == nullptr) return;
  // A ring's teardown runs later, in a kernel worker; a file still registered
  // would stay open until then (a TUN device outliving close()). Unregistering
  // drops it now.
  if (ring->registeredFd >= 0) syscall(__NR_io_uring_register, ring->fd, IORING_UNREGISTER_FILES, nullptr, 0);
  if (ring->sqes != MAP_FAILED) munmap(ring->sqes, ring->sqesSize);
  if (ring->cqMap != MAP_FAILED) munmap(ring->cqMap, ring->cqMapSize);
  if (ring->rings != MAP_FAILED) munmap(ring->rings, ring->ringsSize);
  if (ring->fd >= 0) close(ring->fd);
  delete ring;
}

unsigned RingEntries(const Ring* ring) { return ring->entries; }

bool RingRegisterFile(Ring* ring, int fd) {
  if (syscall(__NR_io_uring_register, ring->fd, IORING_REGISTER_FILES, &fd, 1) < 0) return false;
  ring->registeredFd = fd;
  return true;
}

int RingRun(Ring* ring, int fd, const struct iovec* vectors, unsigned perOp, unsigned writes, unsigned count, int32_t* results) {
  if (count == 0) return 0;
  if (count > ring->entries) return -EINVAL;
  unsigned tail = *ring->sqTail;
  for (unsigned i = 0; i < count; i++) {
    unsigned index = (tail + i) & *ring->sqMask;
    io_uring_sqe* sqe = &ring->sqes[index];
    memset(sqe, 0, sizeof *sqe);
    bool write = i < writes;
    sqe->opcode = write ? IORING_OP_WRITEV : IORING_OP_READV;
    if (fd == ring->registeredFd) {
      sqe->fd = 0;
      sqe->flags = IOSQE_FIXED_FILE;
    } else {
      sqe->fd = fd;
    }
    sqe->addr = reinterpret_cast<uint64_t>(vectors + i * perOp);
    sqe->len = perOp;
    sqe->off = 0;  // a TUN device ignores positions; -1 ("the file's") would take the position lock
    if (!write) sqe->rw_flags = RWF_NOWAIT;
    sqe->user_data = i;
    ring->sqArray[index] = index;
  }
  __atomic_store_n(ring->sqTail, tail + count, __ATOMIC_RELEASE);
  // An operation the kernel took but that never reports back (the ring broke
  // while waiting) reads as -EIO: dropped, never run again by the caller.
  for (unsigned i = 0; i < count; i++) results[i] = -EIO;

  unsigned toSubmit = count, reaped = 0;
  while (reaped < count) {
    int rc = Enter(ring->fd, toSubmit, count - reaped);
    if (rc < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (toSubmit == count && __atomic_load_n(ring->sqHead, __ATOMIC_ACQUIRE) == tail) {
        // Nothing was taken: withdraw the entries, so the next call starts clean.
        __atomic_store_n(ring->sqTail, tail, __ATOMIC_RELEASE);
        return -err;
      }
      // Some were taken: wait for them without submitting; if waiting itself
      // fails, report those not heard from as -EIO rather than an error that
      // would make the caller do them again.
      if (err != EAGAIN && err != EBUSY) return 0;
    } else {
      toSubmit -= static_cast<unsigned>(rc) < toSubmit ? static_cast<unsigned>(rc) : toSubmit;
    }
    unsigned head = *ring->cqHead;
    unsigned ready = __atomic_load_n(ring->cqTail, __ATOMIC_ACQUIRE);
    for (; head != ready; head++) {
      const io_uring_cqe* cqe = &ring->cqes[head & *ring->cqMask];
      if (cqe->user_data < count) results[cqe->user_data] = cqe->res;
      reaped++;
    }
    __atomic_store_n(ring->cqHead, head, __ATOMIC_RELEASE);
  }
  return 0;
}

}  // namespace hostlb
