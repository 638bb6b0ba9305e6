// The TUN addon: opens a Linux TUN device, reads and writes batches of raw IP
// packets into memory the caller owns, and polls the fd with libuv. Nothing
// else: addresses, routes and rules live in src/net/, packet logic in src/dispatch/.
//
// Surface (see src/native/addon.ts for the typed view):
//   open(name, vnetHeader) -> { fd, name }   setPersist(fd, on)   setOffload(fd, flags)
//   getMtu(name) -> number              setMtu(name, mtu)
//   readBatch(fd, buffer, offsets, lengths, maxPackets, slotSize) -> count
//   writeBatch(fd, buffer, offsets, lengths, count) -> accepted
//   readVnetBatch(fd, buffer, offsets, lengths, maxPackets, slotSize,
//                 headers, flags, gsoSizes, csumAt) -> count      (IFF_VNET_HDR: header apart)
//   writeVnetBatch(fd, buffer, offsets, lengths, count, flags, headers, slotSize) -> accepted
//   cycleVnetBatch(fd, <writeVnetBatch's 7>, <readVnetBatch's 9>) -> read + 65536 * accepted
//                        one batch out, then the next in (with a ring: one system call)
//   ringAttach(fd)       the vnet batches of this fd through an io_uring (ring.h):
//                        one system call per batch; throws when io_uring is refused
//   watch(fd, callback)   unwatch(fd)   close(fd)
//   netlinkOpen(protocol, groups, receiveBufferBytes) -> { fd, portId }
//   recvBatch(fd, buffer, offsets, lengths, maxPackets, slotSize) -> count   (sockets: one recvmmsg)
//   bpfMapCreate/Update/Lookup/Delete/NextKey, bpfProgLoad, bpfLinkCreate/Detach,
//   bpfObjPin/Get/GetInfo, pidfdOpen, pidfdGetfd    (the socket data plane, src/bpf/:
//                                                    one bpf(2) or pidfd command each)
//   listenTcp                                        a listening socket for a supervised
//                                                    daemon (LISTEN_FDS, src/link/listen-socket.ts)
//   sdNotify(socketPath, message)                    systemd's readiness protocol (src/control/sd-notify.ts)
// readBatch/writeBatch/watch/close work on any datagram fd, so the netfilter
// data plane reads and writes its netlink sockets through them too; messages
// are built and parsed in TypeScript (src/netlink/).
// System errors throw an Error whose `code` is the errno name ('EPERM') and
// whose message names what failed ("TUNSETIFF hlb0: Operation not permitted").

#include <napi.h>
#include <uv.h>

#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <unordered_map>

namespace {

// ---- errors ---------------------------------------------------------------

Napi::Error SystemError(Napi::Env env, int err, const std::string& what, const char* syscall) {
  // libuv's error codes are the negated errno values on Unix, so its name table
  // gives the same names Node uses for its own system errors.
  char name[64];
  uv_err_name_r(uv_translate_sys_error(err), name, sizeof(name));
  Napi::Error error = Napi::Error::New(env, what + ": " + strerror(err));
  error.Set("code", Napi::String::New(env, name));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

bool ThrowSystemError(Napi::Env env, int err, const std::string& what, const char* syscall) {
  SystemError(env, err, what, syscall).ThrowAsJavaScriptException();
  return false;
}

bool ThrowType(Napi::Env env, const char* message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
  return false;
}

bool ThrowRange(Napi::Env env, const char* message) {
  Napi::RangeError::New(env, message).ThrowAsJavaScriptException();
  return false;
}

// ---- argument helpers (each returns false with a pending exception) -------

bool GetFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (!info[i].IsNumber()) return ThrowType(info.Env(), "fd must be a number");
  *fd = info[i].As<Napi::Number>().Int32Value();
  if (*fd < 0) return ThrowRange(info.Env(), "fd must be >= 0");
  return true;
}

bool GetUint32(const Napi::CallbackInfo& info, size_t i, const char* what, uint32_t* out) {
  if (!info[i].IsNumber()) return ThrowType(info.Env(), what);
  double value = info[i].As<Napi::Number>().DoubleValue();
  if (!(value >= 0 && value <= 4294967295.0)) return ThrowRange(info.Env(), what);
  *out = static_cast<uint32_t>(value);
  return true;
}

bool GetBytes(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* length) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    return ThrowType(info.Env(), "buffer must be a Uint8Array");
  }
  Napi::Uint8Array array = info[i].As<Napi::Uint8Array>();
  *data = array.Data();
  *length = array.ElementLength();
  return true;
}

bool GetUint32Array(const Napi::CallbackInfo& info, size_t i, const char* what, uint32_t** data, size_t* length) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    return ThrowType(info.Env(), what);
  }
  Napi::Uint32Array array = info[i].As<Napi::Uint32Array>();
  *data = array.Data();
  *length = array.ElementLength();
  return true;
}

bool GetName(const Napi::CallbackInfo& info, size_t i, std::string* name) {
  if (!info[i].IsString()) return ThrowType(info.Env(), "name must be a string");
  *name = info[i].As<Napi::String>().Utf8Value();
  // IFNAMSIZ counts the terminating NUL: the kernel keeps at most 15 bytes.
  if (name->size() >= IFNAMSIZ) {
    return ThrowSystemError(info.Env(), ENAMETOOLONG, "device name \"" + *name + "\" is longer than 15 bytes", "ioctl");
  }
  return true;
}

// ---- device ---------------------------------------------------------------

Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!GetName(info, 0, &name)) return env.Undefined();

  // O_NONBLOCK: the packet path reads until EAGAIN and must never block the
  // event loop. O_CLOEXEC: a child process (ip, an advisor's probe) must not
  // inherit the device, or the device would outlive this process.
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ThrowSystemError(env, errno, "open /dev/net/tun", "open");
    return env.Undefined();
  }

  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  // IFF_NO_PI: packets are bare IP, no 4-byte protocol prefix; the kernel
  // tells IPv4 from IPv6 by the version nibble on write. IFF_VNET_HDR: each
  // packet travels behind a virtio-net header (checksum and segmentation
  // offload state), which lets TUNSETOFFLOAD hand over 64 KB super-packets.
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (info.Length() > 1 && info[1].ToBoolean().Value()) ifr.ifr_flags |= IFF_VNET_HDR;
  memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    ThrowSystemError(env, err, "TUNSETIFF " + name, "ioctl");
    return env.Undefined();
  }

  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  // The kernel may have chosen the name (a "%d" template), so report its copy.
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  result.Set("name", Napi::String::New(env, ifr.ifr_name));
  return result;
}

Napi::Value SetPersist(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  bool on = info[1].ToBoolean().Value();
  // A persistent device (and its routes) survives the close of its last fd,
  // so replies keep hitting the table-100 routes instead of leaking while
  // hostlb restarts; the kernel drops what is queued to a detached device.
  if (ioctl(fd, TUNSETPERSIST, on ? 1 : 0) < 0) {
    ThrowSystemError(env, errno, std::string("TUNSETPERSIST ") + (on ? "on" : "off"), "ioctl");
  }
  return env.Undefined();
}

// MTU lives on the net device, not on the tun fd: ask through any socket of
// this network namespace (the namespace the device was created in).
bool MtuIoctl(Napi::Env env, const std::string& name, unsigned long request, int* mtu) {
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return ThrowSystemError(env, errno, "socket for MTU of " + name, "socket");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_mtu = *mtu;
  int rc = ioctl(sock, request, &ifr);
  int err = errno;
  close(sock);
  if (rc < 0) {
    return ThrowSystemError(env, err, std::string(request == SIOCSIFMTU ? "SIOCSIFMTU " : "SIOCGIFMTU ") + name, "ioctl");
  }
  *mtu = ifr.ifr_mtu;
  return true;
}

// TUNSETOFFLOAD: which offloads (TUN_F_* bits) the reader takes. The kernel
// refuses (EINVAL) bits it does not know and TSO/USO without TUN_F_CSUM.
Napi::Value SetOffload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint32_t flags;
  if (!GetFd(info, 0, &fd) || !GetUint32(info, 1, "flags must be a non-negative integer", &flags)) return env.Undefined();
  if (ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(flags)) < 0) {
    ThrowSystemError(env, errno, "TUNSETOFFLOAD " + std::to_string(flags), "ioctl");
  }
  return env.Undefined();
}

Napi::Value GetMtu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  int mtu = 0;
  if (!GetName(info, 0, &name) || !MtuIoctl(env, name, SIOCGIFMTU, &mtu)) return env.Undefined();
  return Napi::Number::New(env, mtu);
}

Napi::Value SetMtu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  uint32_t value;
  if (!GetName(info, 0, &name) || !GetUint32(info, 1, "mtu must be a non-negative integer", &value)) return env.Undefined();
  int mtu = static_cast<int>(value);
  MtuIoctl(env, name, SIOCSIFMTU, &mtu);
  return env.Undefined();
}

// ---- per-environment state ----------------------------------------------------

struct Watch;

// A TUN fd's io_uring (ringAttach) and how many reads to try at once next time.
struct RingSlot {
  hostlb::Ring* ring;
  unsigned readAhead;
};

struct AddonState {
  std::unordered_map<int, Watch*> watches;
  std::unordered_map<int, RingSlot> rings;
};

AddonState* State(Napi::Env env) {
  return env.GetInstanceData<AddonState>();
}

RingSlot* FindRing(Napi::Env env, int fd) {
  AddonState* state = State(env);
  auto found = state->rings.find(fd);
  return found == state->rings.end() ? nullptr : &found->second;
}

// ---- batches ----------------------------------------------------------------

// The arguments readBatch and recvBatch share: (fd, buffer, offsets, lengths,
// maxPackets, slotSize), the batch's from `base` on (cycleVnetBatch has two
// batches). `max` is maxPackets clamped to both arrays.
struct BatchArgs {
  int fd;
  uint8_t* buffer;
  size_t bufferLength, offsetsLength, lengthsLength, max;
  uint32_t *offsets, *lengths, maxPackets, slotSize;
};

bool GetBatchArgs(const Napi::CallbackInfo& info, BatchArgs* a, size_t base = 1) {
  if (!GetFd(info, 0, &a->fd) || !GetBytes(info, base, &a->buffer, &a->bufferLength) ||
      !GetUint32Array(info, base + 1, "offsets must be a Uint32Array", &a->offsets, &a->offsetsLength) ||
      !GetUint32Array(info, base + 2, "lengths must be a Uint32Array", &a->lengths, &a->lengthsLength) ||
      !GetUint32(info, base + 3, "maxPackets must be a non-negative integer", &a->maxPackets) ||
      !GetUint32(info, base + 4, "slotSize must be a non-negative integer", &a->slotSize)) {
    return false;
  }
  if (a->slotSize == 0) return ThrowRange(info.Env(), "slotSize must be > 0");
  a->max = a->maxPackets;
  if (a->offsetsLength < a->max) a->max = a->offsetsLength;
  if (a->lengthsLength < a->max) a->max = a->lengthsLength;
  return true;
}

// Per-packet flags, as src/link/link.ts names them (PACKET_FLAG_*).
constexpr uint8_t kFlagPartialCsum = 1;
constexpr uint8_t kFlagGsoTcpV4 = 2;
constexpr uint8_t kFlagGsoTcpV6 = 4;
constexpr uint8_t kFlagGsoUdp = 8;
constexpr uint8_t kFlagBadVnet = 16;
// A packet whose header says more than "complete checksums, one packet": its
// header goes back with it on write (the slot's copy), otherwise a zero one.
constexpr uint8_t kFlagsKeepHeader = kFlagPartialCsum | kFlagGsoTcpV4 | kFlagGsoTcpV6 | kFlagGsoUdp;
// struct virtio_net_hdr (linux/virtio_net.h, which does not compile as C++):
// flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
constexpr size_t kVnetHeaderLen = 10;
constexpr uint8_t kVnetNeedsCsum = 1;
constexpr uint8_t kVnetGsoNone = 0, kVnetGsoTcpV4 = 1, kVnetGsoTcpV6 = 4, kVnetGsoUdpL4 = 5, kVnetGsoEcn = 0x80;

// Reads packets into their slots until EAGAIN or `max`: one read(2) each, or,
// with `headers`, one readv(2) that puts packet i's virtio-net header at
// headers[i * 10] and the packet in its slot. Returns the count, or -1 with
// an exception pending. `name` names the caller in errors.
// Bytes slot i may take (its slot, or less at the buffer's end); false with
// a RangeError pending when offsets[i] lies outside the buffer.
bool SlotRoom(Napi::Env env, const BatchArgs& a, size_t i, const char* name, size_t* room) {
  size_t offset = a.offsets[i];
  if (offset >= a.bufferLength) return ThrowRange(env, (std::string(name) + ": offsets[i] lies outside the buffer").c_str());
  *room = a.bufferLength - offset < a.slotSize ? a.bufferLength - offset : a.slotSize;
  return true;
}

int64_t ReadIntoSlots(Napi::Env env, const BatchArgs& a, size_t max, uint8_t* headers, const char* name) {
  size_t prefix = headers == nullptr ? 0 : kVnetHeaderLen;
  uint32_t count = 0;
  while (count < max) {
    size_t offset = a.offsets[count], room;
    if (!SlotRoom(env, a, count, name, &room)) return -1;
    struct iovec iov[2] = {{headers + count * prefix, prefix}, {a.buffer + offset, room}};
    ssize_t n = headers == nullptr ? read(a.fd, a.buffer + offset, room) : readv(a.fd, iov, 2);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      // Hand over what was read; a lasting error (EBADFD: device deleted)
      // comes back on the next call with nothing read before it.
      if (count > 0) break;
      ThrowSystemError(env, errno, "read from fd " + std::to_string(a.fd), headers == nullptr ? "read" : "readv");
      return -1;
    }
    if (n == 0) break;
    if (static_cast<size_t>(n) <= prefix) continue;  // a header without a packet: nothing to hand over
    // tun_put_user() returns the packet's full length even when the slot was
    // too small and it copied less; clamp so the length never exceeds the
    // bytes present. The wire layer then sees totalLen > length: truncated.
    size_t length = static_cast<size_t>(n) - prefix;
    a.lengths[count] = static_cast<uint32_t>(length > room ? room : length);
    count++;
  }
  return count;
}

// Most operations one RingRun carries (the vectors live on the stack).
constexpr unsigned kRingBatch = 64;
// RingReadSlots could not use the ring at all: read per packet instead.
constexpr int64_t kRingUnavailable = -2;

// The operations of one RingReadSlots call: room for a chunk of writes
// ahead of the reads (cycleVnetBatch puts them at the front: two iovecs and
// one result each) and a chunk of reads after them.
struct RingScratch {
  struct iovec vectors[4 * kRingBatch];
  int32_t results[2 * kRingBatch];
};

// ReadIntoSlots with headers, through the fd's ring: the reads of a batch in
// one io_uring_enter. It tries `readAhead` reads (one more than the last
// call found, at least two: one packet and the read that finds the device
// empty), then twice as many again while every one found a packet. The
// first `writes` operations of `scratch` (at most kRingBatch), already
// filled in, go into the first enter ahead of the reads and leave their
// results in place. Returns the count, -1 with an exception pending, or
// kRingUnavailable (then nothing ran, the writes neither).
int64_t RingReadSlots(Napi::Env env, RingSlot* slot, const BatchArgs& a, size_t max, uint8_t* headers, const char* name,
                      RingScratch* scratch, unsigned writes = 0) {
  unsigned limit = std::min(kRingBatch, hostlb::RingEntries(slot->ring) - writes);
  // Reads always sit after the writes, so later enters leave the writes' results alone.
  struct iovec* reads = scratch->vectors + 2 * writes;
  const int32_t* readResults = scratch->results + writes;
  size_t count = 0;
  unsigned want = slot->readAhead;
  int firstError = 0;
  bool empty = false, first = true;
  while ((count < max && !empty) || (first && writes > 0)) {
    unsigned n = static_cast<unsigned>(std::min<size_t>(std::min(want, limit), max - count));
    for (unsigned j = 0; j < n; j++) {
      size_t i = count + j, room;
      if (!SlotRoom(env, a, i, name, &room)) return -1;
      reads[2 * j] = {headers + i * kVnetHeaderLen, kVnetHeaderLen};
      reads[2 * j + 1] = {a.buffer + a.offsets[i], room};
    }
    unsigned ahead = first ? writes : 0;
    if (hostlb::RingRun(slot->ring, a.fd, reads - 2 * ahead, 2, ahead, ahead + n, scratch->results + writes - ahead) < 0) {
      if (first) return kRingUnavailable;
      break;
    }
    first = false;
    // Results in submission order. A packet that arrived between a read that
    // found the device empty and a later one leaves a gap: move it down, so
    // packets stay in slots 0..count-1 (rare; the copy is one packet).
    size_t got = 0;
    for (unsigned j = 0; j < n; j++) {
      int32_t r = readResults[j];
      if (r < 0) {
        if (r == -EAGAIN) empty = true;
        else if (r != -EINTR && firstError == 0) firstError = -r;
        continue;
      }
      if (static_cast<size_t>(r) <= kVnetHeaderLen) continue;  // a header without a packet
      size_t from = count + j, to = count + got;
      size_t room = std::min(reads[2 * j + 1].iov_len, reads[2 * got + 1].iov_len);
      // tun_put_user() returns the full length even when it copied less (ReadIntoSlots).
      size_t length = std::min(static_cast<size_t>(r) - kVnetHeaderLen, room);
      if (from != to) {
        memmove(a.buffer + a.offsets[to], a.buffer + a.offsets[from], length);
        memmove(headers + to * kVnetHeaderLen, headers + from * kVnetHeaderLen, kVnetHeaderLen);
      }
      a.lengths[to] = static_cast<uint32_t>(length);
      got++;
    }
    count += got;
    if (got < n) break;
    want = n * 2;
  }
  slot->readAhead = static_cast<unsigned>(std::min<size_t>(std::max<size_t>(count + 1, 2), kRingBatch));
  if (count == 0 && firstError != 0) {
    ThrowSystemError(env, firstError, "read from fd " + std::to_string(a.fd), "readv (io_uring)");
    return -1;
  }
  return static_cast<int64_t>(count);
}

Napi::Value ReadBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BatchArgs a;
  if (!GetBatchArgs(info, &a)) return env.Undefined();
  int64_t count = ReadIntoSlots(env, a, a.max, nullptr, "readBatch");
  if (count < 0) return env.Undefined();
  return Napi::Number::New(env, static_cast<double>(count));
}

// The arguments writeBatch and writeVnetBatch share: (fd, buffer, offsets,
// lengths, count), the batch's from `base` on. `max` is count clamped to both arrays.
struct WriteArgs {
  int fd;
  uint8_t* buffer;
  size_t bufferLength, max;
  uint32_t *offsets, *lengths;
};

bool GetWriteArgs(const Napi::CallbackInfo& info, WriteArgs* a, size_t base = 1) {
  size_t offsetsLength, lengthsLength;
  uint32_t count;
  if (!GetFd(info, 0, &a->fd) || !GetBytes(info, base, &a->buffer, &a->bufferLength) ||
      !GetUint32Array(info, base + 1, "offsets must be a Uint32Array", &a->offsets, &offsetsLength) ||
      !GetUint32Array(info, base + 2, "lengths must be a Uint32Array", &a->lengths, &lengthsLength) ||
      !GetUint32(info, base + 3, "count must be a non-negative integer", &count)) {
    return false;
  }
  a->max = count;
  if (offsetsLength < a->max) a->max = offsetsLength;
  if (lengthsLength < a->max) a->max = lengthsLength;
  return true;
}

// What a packet's failed write means for the batch.
enum class WriteFailure { kDropRest, kDropOne, kFatal };

WriteFailure ClassifyWriteError(int err) {
  // EAGAIN/ENOBUFS: no memory for more skbs now. EIO: the device is
  // administratively down (tun_get_user). Either way the rest of the batch
  // is dropped, as a full NIC queue would drop it.
  if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EIO) return WriteFailure::kDropRest;
  // EINVAL/EMSGSIZE/EFAULT: the kernel refused this one packet (not IPv4 or
  // IPv6, too large, too short, a header it cannot use); drop it alone.
  if (err == EINVAL || err == EMSGSIZE || err == EFAULT) return WriteFailure::kDropOne;
  return WriteFailure::kFatal;
}

Napi::Value WriteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  WriteArgs a;
  if (!GetWriteArgs(info, &a)) return env.Undefined();
  uint32_t accepted = 0;
  for (size_t i = 0; i < a.max; i++) {
    size_t offset = a.offsets[i], length = a.lengths[i];
    if (offset > a.bufferLength || length > a.bufferLength - offset) {
      ThrowRange(env, "writeBatch: packet lies outside the buffer");
      return env.Undefined();
    }
    // One write(2) per packet: a TUN fd takes exactly one packet per write
    // (tun_get_user), so writev would not batch anything either.
    ssize_t n;
    do {
      n = write(a.fd, a.buffer + offset, length);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
      accepted++;
      continue;
    }
    WriteFailure failure = ClassifyWriteError(errno);
    if (failure == WriteFailure::kDropRest) break;
    if (failure == WriteFailure::kDropOne) continue;
    ThrowSystemError(env, errno, "write to TUN fd " + std::to_string(a.fd), "write");
    return env.Undefined();
  }
  return Napi::Number::New(env, accepted);
}

// ---- batches behind a virtio-net header --------------------------------------


// Headers are little-endian (virtio 1.0, and the legacy native order on the
// little-endian hosts this runs on).
uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

bool GetTyped(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type type, const char* what, void** data, size_t* length) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != type) return ThrowType(info.Env(), what);
  Napi::TypedArray array = info[i].As<Napi::TypedArray>();
  Napi::ArrayBuffer ab = array.ArrayBuffer();
  *data = static_cast<uint8_t*>(ab.Data()) + array.ByteOffset();
  *length = array.ElementLength();
  return true;
}

// What the dispatcher needs of a header, decoded once here: the flags above,
// the segment size, and where a partial checksum lives (csum_start +
// csum_offset, bytes from the IP header). The raw header stays in `headers`.
uint8_t DecodeVnet(const uint8_t* h, uint16_t* gsoSize, uint16_t* csumAt) {
  uint8_t flags = 0;
  if (h[0] & kVnetNeedsCsum) flags |= kFlagPartialCsum;
  *csumAt = static_cast<uint16_t>(Le16(h + 6) + Le16(h + 8));
  *gsoSize = Le16(h + 4);
  switch (h[1] & ~kVnetGsoEcn) {
    case kVnetGsoNone: *gsoSize = 0; break;
    case kVnetGsoTcpV4: flags |= kFlagGsoTcpV4; break;
    case kVnetGsoTcpV6: flags |= kFlagGsoTcpV6; break;
    case kVnetGsoUdpL4: flags |= kFlagGsoUdp; break;
    default: flags |= kFlagBadVnet;  // UFO (fragmenting) or unknown: never asked for
  }
  if ((flags & (kFlagGsoTcpV4 | kFlagGsoTcpV6 | kFlagGsoUdp)) && *gsoSize == 0) flags |= kFlagBadVnet;
  return flags;
}

// readVnetBatch's arrays beyond BatchArgs (headers, flags, gsoSizes, csumAt,
// from `base` on) and `max` clamped to them.
struct VnetRead {
  BatchArgs a;
  uint8_t *headers, *flags;
  uint16_t *gsoSizes, *csumAt;
  size_t max;
};

bool GetVnetRead(const Napi::CallbackInfo& info, size_t base, VnetRead* r) {
  void *headersData, *flagsData, *gsoData, *csumData;
  size_t headersLength, flagsLength, gsoLength, csumLength;
  if (!GetBatchArgs(info, &r->a, base) ||
      !GetTyped(info, base + 5, napi_uint8_array, "headers must be a Uint8Array", &headersData, &headersLength) ||
      !GetTyped(info, base + 6, napi_uint8_array, "flags must be a Uint8Array", &flagsData, &flagsLength) ||
      !GetTyped(info, base + 7, napi_uint16_array, "gsoSizes must be a Uint16Array", &gsoData, &gsoLength) ||
      !GetTyped(info, base + 8, napi_uint16_array, "csumAt must be a Uint16Array", &csumData, &csumLength)) {
    return false;
  }
  r->headers = static_cast<uint8_t*>(headersData);
  r->flags = static_cast<uint8_t*>(flagsData);
  r->gsoSizes = static_cast<uint16_t*>(gsoData);
  r->csumAt = static_cast<uint16_t*>(csumData);
  r->max = std::min({r->a.max, headersLength / kVnetHeaderLen, flagsLength, gsoLength, csumLength});
  return true;
}

// The per-packet reads (no ring, or the ring refused), then the decoding of
// what was read. Returns the count, or -1 with an exception pending.
int64_t FinishVnetRead(Napi::Env env, const VnetRead& r, int64_t count, const char* name) {
  if (count == kRingUnavailable) count = ReadIntoSlots(env, r.a, r.max, r.headers, name);
  if (count < 0) return -1;
  for (int64_t i = 0; i < count; i++) r.flags[i] = DecodeVnet(r.headers + i * kVnetHeaderLen, &r.gsoSizes[i], &r.csumAt[i]);
  return count;
}

// readBatch for a TUN fd opened with IFF_VNET_HDR: one readv(2) per packet,
// the header into headers[i * 10], the packet into its slot. Also fills
// flags[i], gsoSizes[i] and csumAt[i] (DecodeVnet). A read shorter than a
// header is skipped.
Napi::Value ReadVnetBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  VnetRead r;
  if (!GetVnetRead(info, 1, &r)) return env.Undefined();
  RingSlot* ring = FindRing(env, r.a.fd);
  RingScratch scratch;
  int64_t count = ring == nullptr ? kRingUnavailable : RingReadSlots(env, ring, r.a, r.max, r.headers, "readVnetBatch", &scratch);
  if (count == -1 || (count = FinishVnetRead(env, r, count, "readVnetBatch")) < 0) return env.Undefined();
  return Napi::Number::New(env, static_cast<double>(count));
}

// writeVnetBatch's arrays beyond WriteArgs (flags, headers, slotSize, from
// `base` on) and `max` clamped to them.
struct VnetWrite {
  WriteArgs a;
  uint8_t *flags, *headers;
  size_t headersLength, max;
  uint32_t slotSize;
};

bool GetVnetWrite(const Napi::CallbackInfo& info, size_t base, VnetWrite* w) {
  void *flagsData, *headersData;
  size_t flagsLength;
  if (!GetWriteArgs(info, &w->a, base) ||
      !GetTyped(info, base + 4, napi_uint8_array, "flags must be a Uint8Array", &flagsData, &flagsLength) ||
      !GetTyped(info, base + 5, napi_uint8_array, "headers must be a Uint8Array", &headersData, &w->headersLength) ||
      !GetUint32(info, base + 6, "slotSize must be a non-negative integer", &w->slotSize)) {
    return false;
  }
  if (w->slotSize == 0) return ThrowRange(info.Env(), "slotSize must be > 0");
  w->flags = static_cast<uint8_t*>(flagsData);
  w->headers = static_cast<uint8_t*>(headersData);
  w->max = std::min(w->a.max, flagsLength);
  return true;
}

// Packet i of a vnet write as the two iovecs of one writev: a packet flagged
// partial or GSO behind the header read with it (headers[slot * 10], its
// slot being offset / slotSize: translation changes no length or header
// offset); any other (answers hostlb built, packets with complete checksums)
// behind a zero header: one packet, checksums done. False with a RangeError
// pending when the packet lies outside the buffer.
bool VnetWriteVector(Napi::Env env, const VnetWrite& w, size_t i, struct iovec* iov) {
  static const uint8_t kZeroHeader[kVnetHeaderLen] = {0};
  size_t offset = w.a.offsets[i], length = w.a.lengths[i];
  if (offset > w.a.bufferLength || length > w.a.bufferLength - offset) {
    return ThrowRange(env, "writeVnetBatch: packet lies outside the buffer");
  }
  const uint8_t* header = kZeroHeader;
  if (w.flags[i] & kFlagsKeepHeader) {
    size_t at = (offset / w.slotSize) * kVnetHeaderLen;
    if (at + kVnetHeaderLen <= w.headersLength) header = w.headers + at;
  }
  iov[0] = {const_cast<uint8_t*>(header), kVnetHeaderLen};
  iov[1] = {w.a.buffer + offset, length};
  return true;
}

// Counts the ring's results for `n` writes into `accepted`: a refused packet
// (kDropRest, kDropOne) is dropped alone, every packet having been tried.
// False with an exception pending on a fatal error.
bool CountRingWrites(Napi::Env env, int fd, const int32_t* results, unsigned n, uint32_t* accepted) {
  for (unsigned j = 0; j < n; j++) {
    if (results[j] >= 0) {
      (*accepted)++;
    } else if (ClassifyWriteError(-results[j]) == WriteFailure::kFatal) {
      return ThrowSystemError(env, -results[j], "write to TUN fd " + std::to_string(fd), "writev (io_uring)");
    }
  }
  return true;
}

// Writes packets [i, w.max) one writev each, adding to `accepted`. False
// with an exception pending on a fatal error.
bool WriteVnetEach(Napi::Env env, const VnetWrite& w, size_t i, uint32_t* accepted) {
  for (; i < w.max; i++) {
    struct iovec iov[2];
    if (!VnetWriteVector(env, w, i, iov)) return false;
    ssize_t n;
    do {
      n = writev(w.a.fd, iov, 2);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
      (*accepted)++;
      continue;
    }
    WriteFailure failure = ClassifyWriteError(errno);
    if (failure == WriteFailure::kDropRest) break;
    if (failure == WriteFailure::kDropOne) continue;
    return ThrowSystemError(env, errno, "write to TUN fd " + std::to_string(w.a.fd), "writev");
  }
  return true;
}

// Writes packets [i, w.max) through the ring a chunk at a time, then what
// the ring could not take one by one. Returns the count accepted in all, or
// -1 with an exception pending.
int64_t WriteVnet(Napi::Env env, const VnetWrite& w, size_t i, uint32_t accepted) {
  // A single packet is one writev either way.
  RingSlot* ring = w.max - i > 1 ? FindRing(env, w.a.fd) : nullptr;
  if (ring != nullptr) {
    struct iovec vectors[2 * kRingBatch];
    int32_t results[kRingBatch];
    unsigned limit = std::min(kRingBatch, hostlb::RingEntries(ring->ring));
    while (i < w.max) {
      unsigned n = static_cast<unsigned>(std::min<size_t>(limit, w.max - i));
      for (unsigned j = 0; j < n; j++) {
        if (!VnetWriteVector(env, w, i + j, &vectors[2 * j])) return -1;
      }
      if (hostlb::RingRun(ring->ring, w.a.fd, vectors, 2, n, n, results) < 0) break;  // the rest one by one
      if (!CountRingWrites(env, w.a.fd, results, n, &accepted)) return -1;
      i += n;
    }
  }
  if (!WriteVnetEach(env, w, i, &accepted)) return -1;
  return accepted;
}

// writeBatch for a TUN fd opened with IFF_VNET_HDR: one writev(2) per packet,
// or, with a ring (ringAttach), the whole batch in one io_uring_enter; each
// packet behind the header VnetWriteVector gives it.
Napi::Value WriteVnetBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  VnetWrite w;
  if (!GetVnetWrite(info, 1, &w)) return env.Undefined();
  int64_t accepted = WriteVnet(env, w, 0, 0);
  if (accepted < 0) return env.Undefined();
  return Napi::Number::New(env, static_cast<double>(accepted));
}

// cycleVnetBatch(fd, <writeVnetBatch's batch: 7 arguments>, <readVnetBatch's:
// 9>): writes one batch, then reads into another, with a ring in one
// io_uring_enter (the last chunk of a long write goes into it). The two
// batches must not share a buffer: the kernel need not run the writes
// before the reads. Returns read + 65536 * written.
Napi::Value CycleVnetBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  VnetWrite w;
  VnetRead r;
  if (!GetVnetWrite(info, 1, &w) || !GetVnetRead(info, 8, &r)) return env.Undefined();
  auto overlap = [](const uint8_t* a, size_t aLength, const uint8_t* b, size_t bLength) { return a < b + bLength && b < a + aLength; };
  if (overlap(w.a.buffer, w.a.bufferLength, r.a.buffer, r.a.bufferLength) ||
      overlap(w.headers, w.headersLength, r.headers, r.max * kVnetHeaderLen)) {
    ThrowRange(env, "cycleVnetBatch: the written and the read batch share a buffer");
    return env.Undefined();
  }
  if (w.max > 0xffff || r.max > 0xffff) {
    ThrowRange(env, "cycleVnetBatch: at most 65535 packets a batch");
    return env.Undefined();
  }
  RingSlot* ring = FindRing(env, w.a.fd);
  uint32_t accepted = 0;
  int64_t count = kRingUnavailable;
  if (ring != nullptr) {
    // Every chunk but the last on its own; the last ahead of the reads.
    size_t last = w.max > kRingBatch ? w.max - kRingBatch : 0;
    int64_t early = last > 0 ? WriteVnet(env, VnetWrite{w.a, w.flags, w.headers, w.headersLength, last, w.slotSize}, 0, 0) : 0;
    if (early < 0) return env.Undefined();
    accepted = static_cast<uint32_t>(early);
    RingScratch scratch;
    unsigned n = static_cast<unsigned>(w.max - last);
    for (unsigned j = 0; j < n; j++) {
      if (!VnetWriteVector(env, w, last + j, &scratch.vectors[2 * j])) return env.Undefined();
    }
    count = RingReadSlots(env, ring, r.a, r.max, r.headers, "cycleVnetBatch", &scratch, n);
    if (count == -1) return env.Undefined();
    if (count != kRingUnavailable && !CountRingWrites(env, w.a.fd, scratch.results, n, &accepted)) return env.Undefined();
    if (count == kRingUnavailable) {
      int64_t rest = WriteVnet(env, w, last, accepted);
      if (rest < 0) return env.Undefined();
      accepted = static_cast<uint32_t>(rest);
    }
  } else {
    int64_t all = WriteVnet(env, w, 0, 0);
    if (all < 0) return env.Undefined();
    accepted = static_cast<uint32_t>(all);
  }
  if ((count = FinishVnetRead(env, r, count, "cycleVnetBatch")) < 0) return env.Undefined();
  return Napi::Number::New(env, static_cast<double>(count) + 65536.0 * accepted);
}

// ---- readiness --------------------------------------------------------------

// One libuv poll handle per watched fd. The handle is freed in its close
// callback, which libuv runs on a later loop turn, so a callback may unwatch
// its own fd safely.
struct Watch {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
};

void ReleaseJs(Watch* watch) {
  if (watch->env == nullptr) return;
  if (watch->callback != nullptr) napi_delete_reference(watch->env, watch->callback);
  if (watch->context != nullptr) napi_async_destroy(watch->env, watch->context);
  watch->callback = nullptr;
  watch->context = nullptr;
  watch->env = nullptr;
}

void OnClosed(uv_handle_t* handle) {
  delete static_cast<Watch*>(handle->data);
}

void StopWatch(Watch* watch) {
  uv_poll_stop(&watch->handle);
  ReleaseJs(watch);
  uv_close(reinterpret_cast<uv_handle_t*>(&watch->handle), OnClosed);
}

void OnPoll(uv_poll_t* handle, int status, int /*events*/) {
  Watch* watch = static_cast<Watch*>(handle->data);
  napi_env env = watch->env;
  if (env == nullptr || watch->callback == nullptr) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, receiver, result;
  napi_value argv[1];
  size_t argc = 0;
  napi_get_reference_value(env, watch->callback, &callback);
  napi_get_global(env, &receiver);  // napi_make_callback needs an object receiver
  if (status < 0) {
    // libuv stops a poll handle after an error (POLLERR): report it once so
    // the owner's next read surfaces the failure.
    char name[64];
    uv_err_name_r(status, name, sizeof(name));
    Napi::Error error = Napi::Error::New(env, std::string("poll TUN fd: ") + uv_strerror(status));
    error.Set("code", Napi::String::New(env, name));
    argv[argc++] = error.Value();
  }
  // napi_make_callback (not napi_call_function) so process.nextTick queues
  // and promise jobs run after the callback, as for any libuv-driven callback.
  napi_status rc = napi_make_callback(env, watch->context, receiver, callback, argc, argv, &result);
  if (rc == napi_pending_exception) {
    napi_value exception;
    napi_get_and_clear_last_exception(env, &exception);
    napi_fatal_exception(env, exception);
  }
  napi_close_handle_scope(env, scope);
}

Napi::Value Unwatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  AddonState* state = State(env);
  auto found = state->watches.find(fd);
  if (found != state->watches.end()) {
    StopWatch(found->second);
    state->watches.erase(found);
  }
  return env.Undefined();
}

Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  if (!info[1].IsFunction()) {
    ThrowType(env, "callback must be a function");
    return env.Undefined();
  }
  AddonState* state = State(env);
  auto found = state->watches.find(fd);
  if (found != state->watches.end()) {
    StopWatch(found->second);
    state->watches.erase(found);
  }

  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    Napi::Error::New(env, "watch: no libuv loop").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Watch* watch = new Watch();
  watch->env = env;
  watch->callback = nullptr;
  watch->context = nullptr;
  watch->handle.data = watch;
  int rc = uv_poll_init(loop, &watch->handle, fd);
  if (rc < 0) {
    delete watch;
    ThrowSystemError(env, -rc, "watch TUN fd " + std::to_string(fd), "epoll_ctl");
    return env.Undefined();
  }
  napi_create_reference(env, info[1], 1, &watch->callback);
  napi_async_init(env, Napi::Object::New(env), Napi::String::New(env, "hostlb:tun-readable"), &watch->context);
  // Level-triggered (libuv uses epoll without EPOLLET): while packets remain
  // unread the callback fires again on the next loop turn.
  rc = uv_poll_start(&watch->handle, UV_READABLE, OnPoll);
  if (rc < 0) {
    StopWatch(watch);
    ThrowSystemError(env, -rc, "watch TUN fd " + std::to_string(fd), "epoll_ctl");
    return env.Undefined();
  }
  state->watches[fd] = watch;
  return env.Undefined();
}

// ringAttach(fd): readVnetBatch and writeVnetBatch on this fd go through an
// io_uring from now on (ring.h), until close(fd). Throws the system error
// (code ENOSYS, EPERM, ...) when the kernel or a sandbox refuses io_uring;
// the fd then keeps working one system call per packet.
Napi::Value RingAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  AddonState* state = State(env);
  if (state->rings.count(fd) > 0) return env.Undefined();
  // Twice a batch: room for a batch's writes, or its reads, with a chunk to spare.
  hostlb::Ring* ring = hostlb::RingOpen(2 * kRingBatch);
  if (ring == nullptr) {
    ThrowSystemError(env, errno, "io_uring for fd " + std::to_string(fd), "io_uring_setup");
    return env.Undefined();
  }
  // Without the registration (a kernel that refuses it) every operation looks the fd up.
  hostlb::RingRegisterFile(ring, fd);
  state->rings[fd] = RingSlot{ring, 2};
  return env.Undefined();
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  // Stop polling first: epoll must not be left watching a number that the
  // next open() may hand to some other file.
  AddonState* state = State(env);
  auto found = state->watches.find(fd);
  if (found != state->watches.end()) {
    StopWatch(found->second);
    state->watches.erase(found);
  }
  auto ring = state->rings.find(fd);
  if (ring != state->rings.end()) {
    hostlb::RingClose(ring->second.ring);
    state->rings.erase(ring);
  }
  // No retry on EINTR: Linux releases the fd even when close reports EINTR.
  if (close(fd) < 0 && errno != EINTR) ThrowSystemError(env, errno, "close fd " + std::to_string(fd), "close");
  return env.Undefined();
}

// tryLock(fd) -> true when this open file now holds an exclusive flock(2) on
// it, false when another holds it (EWOULDBLOCK). The lock lasts while the fd is
// open: a process that dies, however it dies, lets go of it.
Napi::Value TryLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  int rc;
  do {
    rc = flock(fd, LOCK_EX | LOCK_NB);
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  ThrowSystemError(env, errno, "flock fd " + std::to_string(fd), "flock");
  return env.Undefined();
}

void Cleanup(void* data) {
  // The environment is going away (process exit, worker end): close the poll
  // handles so the loop can close too. The fds themselves belong to the caller.
  AddonState* state = static_cast<AddonState*>(data);
  for (auto& entry : state->watches) StopWatch(entry.second);
  for (auto& entry : state->rings) hostlb::RingClose(entry.second.ring);
  delete state;
}

// The cleanup hook above owns the state; instance data only points at it.
void KeepState(Napi::Env /*env*/, AddonState* /*state*/) {}

// adviseHugePages(buffer: ArrayBuffer) -> bytes advised
// The connection table is one large ArrayBuffer touched at random: with 4 KiB
// pages nearly every packet misses the TLB. MADV_HUGEPAGE on the still
// untouched buffer lets later page faults map 2 MiB pages (THP in "madvise"
// mode, the default here). Only whole 2 MiB-aligned spans inside the buffer are
// advised; returns 0 when the kernel declines (THP off), which is harmless.
Napi::Value AdviseHugePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    Napi::TypeError::New(env, "adviseHugePages(buffer: ArrayBuffer)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  const uintptr_t huge = 2u << 20;
  uintptr_t start = reinterpret_cast<uintptr_t>(buffer.Data());
  uintptr_t end = start + buffer.ByteLength();
  uintptr_t first = (start + huge - 1) & ~(huge - 1);
  uintptr_t last = end & ~(huge - 1);
  if (last <= first) return Napi::Number::New(env, 0);
  if (madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE) != 0) return Napi::Number::New(env, 0);
  return Napi::Number::New(env, static_cast<double>(last - first));
}

// ---- netlink --------------------------------------------------------------

// recvBatch: readBatch for sockets, in one recvmmsg(2) instead of a read(2)
// per datagram — the netfilter plane reads a conntrack event per datagram,
// tens of thousands a second. Same contract as readBatch.
Napi::Value RecvBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BatchArgs a;
  if (!GetBatchArgs(info, &a)) return env.Undefined();
  size_t max = a.max > 256 ? 256 : a.max;
  struct mmsghdr messages[256];
  struct iovec iovs[256];
  for (size_t i = 0; i < max; i++) {
    size_t offset = a.offsets[i];
    if (offset >= a.bufferLength) {
      ThrowRange(env, "recvBatch: offsets[i] lies outside the buffer");
      return env.Undefined();
    }
    iovs[i].iov_base = a.buffer + offset;
    iovs[i].iov_len = a.bufferLength - offset < a.slotSize ? a.bufferLength - offset : a.slotSize;
    memset(&messages[i], 0, sizeof(messages[i]));
    messages[i].msg_hdr.msg_iov = &iovs[i];
    messages[i].msg_hdr.msg_iovlen = 1;
  }
  int n;
  do {
    n = recvmmsg(a.fd, messages, static_cast<unsigned int>(max), MSG_DONTWAIT, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, 0);
    ThrowSystemError(env, errno, "recvmmsg from fd " + std::to_string(a.fd), "recvmmsg");
    return env.Undefined();
  }
  for (int i = 0; i < n; i++) {
    size_t got = messages[i].msg_len;
    a.lengths[i] = static_cast<uint32_t>(got > iovs[i].iov_len ? iovs[i].iov_len : got);
  }
  return Napi::Number::New(env, n);
}

// netlinkOpen(protocol, groups: number[], receiveBufferBytes) -> { fd, portId }
// A non-blocking, close-on-exec netlink socket bound to a kernel-chosen port
// id and joined to the multicast `groups` (conntrack events). The receive
// buffer is forced (SO_RCVBUFFORCE, root) so a burst of events or queued
// packets is not lost to the default 200 KiB; an overrun still reports ENOBUFS
// on the next read, which the caller counts.
Napi::Value NetlinkOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t protocol, rcvbuf;
  if (!GetUint32(info, 0, "protocol must be a non-negative integer", &protocol)) return env.Undefined();
  if (!info[1].IsArray()) {
    ThrowType(env, "groups must be an array of numbers");
    return env.Undefined();
  }
  if (!GetUint32(info, 2, "receiveBufferBytes must be a non-negative integer", &rcvbuf)) return env.Undefined();
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, static_cast<int>(protocol));
  if (fd < 0) {
    ThrowSystemError(env, errno, "open netlink socket (protocol " + std::to_string(protocol) + ")", "socket");
    return env.Undefined();
  }
  auto fail = [&](const std::string& what, const char* syscall) {
    int err = errno;
    close(fd);
    ThrowSystemError(env, err, what, syscall);
    return env.Undefined();
  };
  if (rcvbuf > 0) {
    int size = static_cast<int>(rcvbuf > 0x7fffffffu ? 0x7fffffffu : rcvbuf);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0 &&
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) < 0) {
      return fail("set the netlink receive buffer", "setsockopt");
    }
  }
  struct sockaddr_nl local;
  memset(&local, 0, sizeof(local));
  local.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&local), sizeof(local)) < 0) return fail("bind netlink socket", "bind");
  Napi::Array groups = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < groups.Length(); i++) {
    Napi::Value g = groups.Get(i);
    if (!g.IsNumber()) {
      close(fd);
      ThrowType(env, "groups must be an array of numbers");
      return env.Undefined();
    }
    int group = g.As<Napi::Number>().Int32Value();
    if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0) {
      return fail("join netlink group " + std::to_string(group), "setsockopt");
    }
  }
  socklen_t length = sizeof(local);
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&local), &length) < 0) return fail("read netlink port id", "getsockname");
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  result.Set("portId", Napi::Number::New(env, local.nl_pid));
  return result;
}

// ---- bpf(2) and pidfd ---------------------------------------------------------
//
// Thin wrappers for the socket data plane (src/bpf/): one bpf(2) command each,
// no policy. Programs are assembled and map keys and values encoded in
// TypeScript; these only move bytes across the syscall and close what they
// opened when a later step fails. Every fd the kernel returns here is
// close-on-exec (bpf objects and pidfds always are).

long Bpf(int cmd, union bpf_attr* attr) {
  long rc;
  do {
    rc = syscall(SYS_bpf, cmd, attr, sizeof(*attr));
  } while (rc < 0 && errno == EINTR);
  return rc;
}

uint64_t Pointer(const void* p) {
  return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
}

// BPF_OBJ_NAME_LEN counts the terminating NUL; the kernel accepts only
// [A-Za-z0-9_.] and answers EINVAL otherwise, so that is left to it.
bool GetObjName(const Napi::CallbackInfo& info, size_t i, char (*name)[BPF_OBJ_NAME_LEN]) {
  memset(*name, 0, sizeof(*name));
  if (info[i].IsUndefined() || info[i].IsNull()) return true;
  if (!info[i].IsString()) return ThrowType(info.Env(), "name must be a string");
  std::string value = info[i].As<Napi::String>().Utf8Value();
  if (value.size() >= BPF_OBJ_NAME_LEN) {
    return ThrowSystemError(info.Env(), ENAMETOOLONG, "bpf object name \"" + value + "\" is longer than 15 bytes", "bpf");
  }
  memcpy(*name, value.data(), value.size());
  return true;
}

bool GetPath(const Napi::CallbackInfo& info, size_t i, std::string* path) {
  if (!info[i].IsString()) return ThrowType(info.Env(), "path must be a string");
  *path = info[i].As<Napi::String>().Utf8Value();
  return true;
}

// The kernel copies key_size bytes from the key and value_size bytes to or
// from the value; a shorter Uint8Array would let it read or write past the
// array. So each map call first asks the map for its sizes (one more syscall,
// on the control path only) and refuses buffers that are too short.
struct MapShape {
  uint32_t type, keySize, valueSize;
};

bool GetMapShape(Napi::Env env, int fd, MapShape* shape) {
  struct bpf_map_info map;
  memset(&map, 0, sizeof(map));
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.info.bpf_fd = static_cast<uint32_t>(fd);
  attr.info.info_len = sizeof(map);
  attr.info.info = Pointer(&map);
  if (Bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0) {
    return ThrowSystemError(env, errno, "BPF_OBJ_GET_INFO_BY_FD map fd " + std::to_string(fd), "bpf");
  }
  switch (map.type) {
    // Per-CPU values are value_size rounded up to 8, times the possible CPUs:
    // not needed here, so refused rather than sized wrongly.
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
      return ThrowSystemError(env, EOPNOTSUPP, "map fd " + std::to_string(fd) + " is per-CPU", "bpf");
    default:
      break;
  }
  shape->type = map.type;
  shape->keySize = map.key_size;
  shape->valueSize = map.value_size;
  return true;
}

bool GetSized(const Napi::CallbackInfo& info, size_t i, uint32_t need, const char* what, uint8_t** data) {
  size_t length;
  if (!GetBytes(info, i, data, &length)) return false;
  if (length < need) {
    std::string message = std::string(what) + " is " + std::to_string(length) + " bytes, the map's is " + std::to_string(need);
    Napi::RangeError::New(info.Env(), message).ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// bpfMapCreate(type, keySize, valueSize, maxEntries, flags, name[, btfFd,
// btfKeyTypeId, btfValueTypeId]) -> fd. The BTF arguments describe key and
// value (a socket-storage map refuses to exist without them); -1 or absent: none.
Napi::Value BpfMapCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t type, keySize, valueSize, maxEntries, flags, keyTypeId = 0, valueTypeId = 0;
  int btfFd = -1;
  char name[BPF_OBJ_NAME_LEN];
  if (!GetUint32(info, 0, "type must be a non-negative integer", &type) ||
      !GetUint32(info, 1, "keySize must be a non-negative integer", &keySize) ||
      !GetUint32(info, 2, "valueSize must be a non-negative integer", &valueSize) ||
      !GetUint32(info, 3, "maxEntries must be a non-negative integer", &maxEntries) ||
      !GetUint32(info, 4, "flags must be a non-negative integer", &flags) || !GetObjName(info, 5, &name)) {
    return env.Undefined();
  }
  bool withBtf = info.Length() > 6 && info[6].IsNumber() && info[6].As<Napi::Number>().Int32Value() >= 0;
  if (withBtf && (!GetFd(info, 6, &btfFd) || !GetUint32(info, 7, "btfKeyTypeId must be a non-negative integer", &keyTypeId) ||
                  !GetUint32(info, 8, "btfValueTypeId must be a non-negative integer", &valueTypeId))) {
    return env.Undefined();
  }
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_type = type;
  attr.key_size = keySize;
  attr.value_size = valueSize;
  attr.max_entries = maxEntries;
  attr.map_flags = flags;
  if (withBtf) {
    attr.btf_fd = static_cast<uint32_t>(btfFd);
    attr.btf_key_type_id = keyTypeId;
    attr.btf_value_type_id = valueTypeId;
  }
  memcpy(attr.map_name, name, sizeof(name));
  long fd = Bpf(BPF_MAP_CREATE, &attr);
  if (fd < 0) {
    ThrowSystemError(env, errno, std::string("BPF_MAP_CREATE ") + (name[0] ? name : "(unnamed)") + " (type " + std::to_string(type) + ")", "bpf");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(fd));
}

// bpfMapUpdate(fd, key, value, flags): BPF_ANY 0, BPF_NOEXIST 1, BPF_EXIST 2.
// For a SOCKMAP/SOCKHASH the value is the socket's fd (u32 or u64).
Napi::Value BpfMapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint32_t flags;
  MapShape shape;
  uint8_t *key, *value;
  if (!GetFd(info, 0, &fd) || !GetMapShape(env, fd, &shape) || !GetSized(info, 1, shape.keySize, "key", &key) ||
      !GetSized(info, 2, shape.valueSize, "value", &value) || !GetUint32(info, 3, "flags must be a non-negative integer", &flags)) {
    return env.Undefined();
  }
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = static_cast<uint32_t>(fd);
  attr.key = Pointer(key);
  attr.value = Pointer(value);
  attr.flags = flags;
  if (Bpf(BPF_MAP_UPDATE_ELEM, &attr) < 0) ThrowSystemError(env, errno, "BPF_MAP_UPDATE_ELEM map fd " + std::to_string(fd), "bpf");
  return env.Undefined();
}

// Runs a map command whose ENOENT means "no such key": true when the key was
// there, false when not; throws the system error otherwise.
Napi::Value MapFound(Napi::Env env, int cmd, union bpf_attr* attr, const char* what, int fd) {
  if (Bpf(cmd, attr) < 0) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    ThrowSystemError(env, errno, std::string(what) + " map fd " + std::to_string(fd), "bpf");
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
}

// bpfMapLookup(fd, key, value) -> found. Copies the value into `value`;
// ENOENT is an answer (false), not an error. A SOCKMAP answers with the
// socket's cookie (u64) and needs value_size 8.
Napi::Value BpfMapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  MapShape shape;
  uint8_t *key, *value;
  if (!GetFd(info, 0, &fd) || !GetMapShape(env, fd, &shape) || !GetSized(info, 1, shape.keySize, "key", &key) ||
      !GetSized(info, 2, shape.valueSize, "value", &value)) {
    return env.Undefined();
  }
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = static_cast<uint32_t>(fd);
  attr.key = Pointer(key);
  attr.value = Pointer(value);
  return MapFound(env, BPF_MAP_LOOKUP_ELEM, &attr, "BPF_MAP_LOOKUP_ELEM", fd);
}

// bpfMapDelete(fd, key) -> deleted (false: there was no such key).
Napi::Value BpfMapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  MapShape shape;
  uint8_t* key;
  if (!GetFd(info, 0, &fd) || !GetMapShape(env, fd, &shape) || !GetSized(info, 1, shape.keySize, "key", &key)) {
    return env.Undefined();
  }
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = static_cast<uint32_t>(fd);
  attr.key = Pointer(key);
  return MapFound(env, BPF_MAP_DELETE_ELEM, &attr, "BPF_MAP_DELETE_ELEM", fd);
}

// bpfMapNextKey(fd, key | null, next) -> found. null asks for the first key;
// false means `key` was the last one.
Napi::Value BpfMapNextKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  MapShape shape;
  uint8_t *key = nullptr, *next;
  if (!GetFd(info, 0, &fd) || !GetMapShape(env, fd, &shape)) return env.Undefined();
  if (!info[1].IsNull() && !info[1].IsUndefined() && !GetSized(info, 1, shape.keySize, "key", &key)) return env.Undefined();
  if (!GetSized(info, 2, shape.keySize, "next key", &next)) return env.Undefined();
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = static_cast<uint32_t>(fd);
  attr.key = Pointer(key);
  attr.next_key = Pointer(next);
  return MapFound(env, BPF_MAP_GET_NEXT_KEY, &attr, "BPF_MAP_GET_NEXT_KEY", fd);
}

// Throws the system error of a failed load with the kernel's log (what it
// wrote into `log`, or '' without one) as the error's `log`. Returns undefined.
Napi::Value ThrowWithLog(Napi::Env env, int err, const std::string& what, const uint8_t* log, size_t logLength) {
  Napi::Error error = SystemError(env, err, what, "bpf");
  std::string text;
  if (log != nullptr) text.assign(reinterpret_cast<const char*>(log), strnlen(reinterpret_cast<const char*>(log), logLength));
  error.Set("log", Napi::String::New(env, text));
  error.ThrowAsJavaScriptException();
  return env.Undefined();
}

// bpfProgLoad(type, expectedAttachType, instructions, license, name, logLevel, log | null) -> fd
// `instructions` is struct bpf_insn[] as bytes (8 each). With a log buffer and
// logLevel > 0 the verifier writes its log there; on failure the thrown error
// carries that text as `log` (the verifier's log is part of any load error).
// ENOSPC: the log did not fit (since Linux 6.4 even a program that verifies
// fails this way); the caller retries with a larger buffer.
Napi::Value BpfProgLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t type, attachType, logLevel;
  uint8_t *insns, *log = nullptr;
  size_t insnsLength, logLength = 0;
  char name[BPF_OBJ_NAME_LEN];
  if (!GetUint32(info, 0, "type must be a non-negative integer", &type) ||
      !GetUint32(info, 1, "expectedAttachType must be a non-negative integer", &attachType) ||
      !GetBytes(info, 2, &insns, &insnsLength)) {
    return env.Undefined();
  }
  if (insnsLength == 0 || insnsLength % sizeof(struct bpf_insn) != 0) {
    ThrowRange(env, "instructions must be a non-empty multiple of 8 bytes");
    return env.Undefined();
  }
  if (!info[3].IsString()) {
    ThrowType(env, "license must be a string");
    return env.Undefined();
  }
  std::string license = info[3].As<Napi::String>().Utf8Value();
  if (!GetObjName(info, 4, &name) || !GetUint32(info, 5, "logLevel must be a non-negative integer", &logLevel)) return env.Undefined();
  if (!info[6].IsNull() && !info[6].IsUndefined() && !GetBytes(info, 6, &log, &logLength)) return env.Undefined();
  if (logLength > 0xffffffffu) logLength = 0xffffffffu;
  if (log != nullptr && logLength > 0) log[0] = '\0';

  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.prog_type = type;
  attr.expected_attach_type = attachType;
  attr.insns = Pointer(insns);
  attr.insn_cnt = static_cast<uint32_t>(insnsLength / sizeof(struct bpf_insn));
  attr.license = Pointer(license.c_str());
  memcpy(attr.prog_name, name, sizeof(name));
  if (log != nullptr && logLength > 0 && logLevel > 0) {
    attr.log_level = logLevel;
    attr.log_buf = Pointer(log);
    attr.log_size = static_cast<uint32_t>(logLength);
  }
  // The verifier gives up with EAGAIN whenever a signal is pending for this
  // thread, and a large program takes it tens of milliseconds: a profiler's
  // SIGPROF (every millisecond with node --cpu-prof) would fail every attempt.
  // Signals are held back for the call and delivered after it; process-wide
  // ones (SIGCHLD, SIGTERM) go to another thread meanwhile.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  long fd = Bpf(BPF_PROG_LOAD, &attr);
  int loadErrno = errno;
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  errno = loadErrno;
  if (fd < 0) return ThrowWithLog(env, errno, std::string("BPF_PROG_LOAD ") + (name[0] ? name : "(unnamed)"), attr.log_buf != 0 ? log : nullptr, logLength);
  return Napi::Number::New(env, static_cast<double>(fd));
}

// bpfBtfLoad(bytes, log) -> fd: BPF_BTF_LOAD of a BTF blob (type
// descriptions maps can name). With a `log` buffer the kernel explains a
// refusal there; the thrown error carries it as `log`, as BpfProgLoad's does.
Napi::Value BpfBtfLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t *blob, *log = nullptr;
  size_t blobLength, logLength = 0;
  if (!GetBytes(info, 0, &blob, &blobLength)) return env.Undefined();
  if (blobLength == 0 || blobLength > 0xffffffffu) {
    ThrowRange(env, "a BTF blob must be non-empty");
    return env.Undefined();
  }
  if (!info[1].IsNull() && !info[1].IsUndefined() && !GetBytes(info, 1, &log, &logLength)) return env.Undefined();
  if (logLength > 0xffffffffu) logLength = 0xffffffffu;
  if (log != nullptr && logLength > 0) log[0] = '\0';
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.btf = Pointer(blob);
  attr.btf_size = static_cast<uint32_t>(blobLength);
  if (log != nullptr && logLength > 0) {
    attr.btf_log_level = 1;
    attr.btf_log_buf = Pointer(log);
    attr.btf_log_size = static_cast<uint32_t>(logLength);
  }
  long fd = Bpf(BPF_BTF_LOAD, &attr);
  if (fd < 0) return ThrowWithLog(env, errno, "BPF_BTF_LOAD", attr.btf_log_buf != 0 ? log : nullptr, logLength);
  return Napi::Number::New(env, static_cast<double>(fd));
}

// bpfLinkCreate(progFd, targetFd, attachType, flags) -> link fd. For
// BPF_SK_LOOKUP the target is a network namespace fd (/proc/self/ns/net,
// /run/netns/NAME); the program stays attached while the link lives (an open
// fd or a pin in bpffs).
Napi::Value BpfLinkCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int progFd, targetFd;
  uint32_t attachType, flags;
  if (!GetFd(info, 0, &progFd) || !GetFd(info, 1, &targetFd) ||
      !GetUint32(info, 2, "attachType must be a non-negative integer", &attachType) ||
      !GetUint32(info, 3, "flags must be a non-negative integer", &flags)) {
    return env.Undefined();
  }
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.link_create.prog_fd = static_cast<uint32_t>(progFd);
  attr.link_create.target_fd = static_cast<uint32_t>(targetFd);
  attr.link_create.attach_type = attachType;
  attr.link_create.flags = flags;
  long fd = Bpf(BPF_LINK_CREATE, &attr);
  if (fd < 0) {
    ThrowSystemError(env, errno, "BPF_LINK_CREATE prog fd " + std::to_string(progFd) + " target fd " + std::to_string(targetFd), "bpf");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(fd));
}

// bpfLinkDetach(linkFd): detaches the program now, even while the link is
// pinned or open elsewhere (Linux 5.9); the link fd stays valid, defunct.
Napi::Value BpfLinkDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.link_detach.link_fd = static_cast<uint32_t>(fd);
  if (Bpf(BPF_LINK_DETACH, &attr) < 0) ThrowSystemError(env, errno, "BPF_LINK_DETACH link fd " + std::to_string(fd), "bpf");
  return env.Undefined();
}

// bpfObjPin(fd, path): pins a map, program or link at `path` in a bpffs.
Napi::Value BpfObjPin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  std::string path;
  if (!GetFd(info, 0, &fd) || !GetPath(info, 1, &path)) return env.Undefined();
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.pathname = Pointer(path.c_str());
  attr.bpf_fd = static_cast<uint32_t>(fd);
  if (Bpf(BPF_OBJ_PIN, &attr) < 0) ThrowSystemError(env, errno, "BPF_OBJ_PIN " + path, "bpf");
  return env.Undefined();
}

// bpfObjGet(path) -> fd of the object pinned at `path`.
Napi::Value BpfObjGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!GetPath(info, 0, &path)) return env.Undefined();
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.pathname = Pointer(path.c_str());
  long fd = Bpf(BPF_OBJ_GET, &attr);
  if (fd < 0) {
    ThrowSystemError(env, errno, "BPF_OBJ_GET " + path, "bpf");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(fd));
}

// bpfObjGetInfo(fd, buffer) -> bytes filled. The kernel writes struct
// bpf_map_info, bpf_prog_info or bpf_link_info (whichever the fd is) into
// `buffer`, at most its length; the caller parses it.
Napi::Value BpfObjGetInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* buffer;
  size_t length;
  if (!GetFd(info, 0, &fd) || !GetBytes(info, 1, &buffer, &length)) return env.Undefined();
  // The kernel reads the buffer too: fields it does not fill must be zero.
  memset(buffer, 0, length);
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.info.bpf_fd = static_cast<uint32_t>(fd);
  attr.info.info_len = static_cast<uint32_t>(length > 0xffffffffu ? 0xffffffffu : length);
  attr.info.info = Pointer(buffer);
  if (Bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0) {
    ThrowSystemError(env, errno, "BPF_OBJ_GET_INFO_BY_FD fd " + std::to_string(fd), "bpf");
    return env.Undefined();
  }
  return Napi::Number::New(env, attr.info.info_len);
}

// pidfdOpen(pid) -> pidfd (Linux 5.3).
Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pid;
  if (!GetUint32(info, 0, "pid must be a non-negative integer", &pid)) return env.Undefined();
  long fd = syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0);
  if (fd < 0) {
    ThrowSystemError(env, errno, "pidfd_open pid " + std::to_string(pid), "pidfd_open");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(fd));
}

// pidfdGetfd(pidfd, targetFd) -> a duplicate, in this process, of the target
// process's fd (Linux 5.6; needs ptrace access to it: root, or the same user
// under Yama scope 0). Both fds then refer to the same open file.
Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pidfd, target;
  if (!GetFd(info, 0, &pidfd) || !GetFd(info, 1, &target)) return env.Undefined();
  long fd = syscall(SYS_pidfd_getfd, pidfd, target, 0);
  if (fd < 0) {
    ThrowSystemError(env, errno, "pidfd_getfd fd " + std::to_string(target), "pidfd_getfd");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(fd));
}

// listenTcp(family, address, port, backlog) -> fd of a listening TCP socket
// bound to `address` (4 or 16 bytes, network order) and `port`, with
// SO_REUSEADDR, close-on-exec. Nothing in this process accepts on it: it is
// handed to a supervised daemon (LISTEN_FDS, as fd 3) and kept across the
// daemon's restarts, so connections wait in its backlog meanwhile.
Napi::Value ListenTcp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t family, port, backlog;
  if (!GetUint32(info, 0, "family must be 4 or 6", &family) ||
      !GetUint32(info, 2, "port must be a non-negative integer", &port) ||
      !GetUint32(info, 3, "backlog must be a non-negative integer", &backlog)) {
    return env.Undefined();
  }
  if ((family != 4 && family != 6) || port > 65535 || info.Length() < 2 || !info[1].IsTypedArray()) {
    Napi::TypeError::New(env, "listenTcp(family 4|6, address bytes, port, backlog)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array address = info[1].As<Napi::Uint8Array>();
  if (address.ByteLength() != (family == 4 ? 4u : 16u)) {
    Napi::RangeError::New(env, "address must be 4 bytes for IPv4, 16 for IPv6").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  socklen_t len;
  if (family == 4) {
    struct sockaddr_in* sin = reinterpret_cast<struct sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    memcpy(&sin->sin_addr, address.Data(), 4);
    len = sizeof(*sin);
  } else {
    struct sockaddr_in6* sin6 = reinterpret_cast<struct sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    memcpy(&sin6->sin6_addr, address.Data(), 16);
    len = sizeof(*sin6);
  }
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowSystemError(env, errno, "socket", "socket");
    return env.Undefined();
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (family == 6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&ss), len) < 0) {
    int e = errno;
    close(fd);
    ThrowSystemError(env, e, "bind port " + std::to_string(port), "bind");
    return env.Undefined();
  }
  if (listen(fd, static_cast<int>(backlog)) < 0) {
    int e = errno;
    close(fd);
    ThrowSystemError(env, e, "listen port " + std::to_string(port), "listen");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(fd));
}

// sdNotify(socketPath, message) -> true once sent: one datagram to systemd's
// notification socket (NOTIFY_SOCKET; "@name" is an abstract socket), as
// sd_notify(3) sends it. Node has no unix datagram sockets of its own.
Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    Napi::TypeError::New(env, "sdNotify(socketPath, message)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string message = info[1].As<Napi::String>().Utf8Value();
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path) || (path[0] != '/' && path[0] != '@')) {
    Napi::RangeError::New(env, "NOTIFY_SOCKET must be an absolute path or @abstract, shorter than 108 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';
  socklen_t len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size());
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowSystemError(env, errno, "socket for NOTIFY_SOCKET", "socket");
    return env.Undefined();
  }
  ssize_t sent = sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<struct sockaddr*>(&addr), len);
  int e = errno;
  close(fd);
  if (sent < 0) {
    ThrowSystemError(env, e, "notify " + path, "sendto");
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  AddonState* state = new AddonState();
  env.SetInstanceData<AddonState, KeepState>(state);
  napi_add_env_cleanup_hook(env, Cleanup, state);
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("setPersist", Napi::Function::New(env, SetPersist, "setPersist"));
  exports.Set("getMtu", Napi::Function::New(env, GetMtu, "getMtu"));
  exports.Set("setMtu", Napi::Function::New(env, SetMtu, "setMtu"));
  exports.Set("readBatch", Napi::Function::New(env, ReadBatch, "readBatch"));
  exports.Set("writeBatch", Napi::Function::New(env, WriteBatch, "writeBatch"));
  exports.Set("readVnetBatch", Napi::Function::New(env, ReadVnetBatch, "readVnetBatch"));
  exports.Set("writeVnetBatch", Napi::Function::New(env, WriteVnetBatch, "writeVnetBatch"));
  exports.Set("cycleVnetBatch", Napi::Function::New(env, CycleVnetBatch, "cycleVnetBatch"));
  exports.Set("setOffload", Napi::Function::New(env, SetOffload, "setOffload"));
  exports.Set("ringAttach", Napi::Function::New(env, RingAttach, "ringAttach"));
  exports.Set("watch", Napi::Function::New(env, WatchFd, "watch"));
  exports.Set("unwatch", Napi::Function::New(env, Unwatch, "unwatch"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("recvBatch", Napi::Function::New(env, RecvBatch, "recvBatch"));
  exports.Set("netlinkOpen", Napi::Function::New(env, NetlinkOpen, "netlinkOpen"));
  exports.Set("tryLock", Napi::Function::New(env, TryLock, "tryLock"));
  exports.Set("adviseHugePages", Napi::Function::New(env, AdviseHugePages, "adviseHugePages"));
  exports.Set("bpfMapCreate", Napi::Function::New(env, BpfMapCreate, "bpfMapCreate"));
  exports.Set("bpfMapUpdate", Napi::Function::New(env, BpfMapUpdate, "bpfMapUpdate"));
  exports.Set("bpfMapLookup", Napi::Function::New(env, BpfMapLookup, "bpfMapLookup"));
  exports.Set("bpfMapDelete", Napi::Function::New(env, BpfMapDelete, "bpfMapDelete"));
  exports.Set("bpfMapNextKey", Napi::Function::New(env, BpfMapNextKey, "bpfMapNextKey"));
  exports.Set("bpfProgLoad", Napi::Function::New(env, BpfProgLoad, "bpfProgLoad"));
  exports.Set("bpfBtfLoad", Napi::Function::New(env, BpfBtfLoad, "bpfBtfLoad"));
  exports.Set("bpfLinkCreate", Napi::Function::New(env, BpfLinkCreate, "bpfLinkCreate"));
  exports.Set("bpfLinkDetach", Napi::Function::New(env, BpfLinkDetach, "bpfLinkDetach"));
  exports.Set("bpfObjPin", Napi::Function::New(env, BpfObjPin, "bpfObjPin"));
  exports.Set("bpfObjGet", Napi::Function::New(env, BpfObjGet, "bpfObjGet"));
  exports.Set("bpfObjGetInfo", Napi::Function::New(env, BpfObjGetInfo, "bpfObjGetInfo"));
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen, "pidfdOpen"));
  exports.Set("pidfdGetfd", Napi::Function::New(env, PidfdGetfd, "pidfdGetfd"));
  exports.Set("listenTcp", Napi::Function::New(env, ListenTcp, "listenTcp"));
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify, "sdNotify"));
  return exports;
}

}  // namespace

NODE_API_MODULE(hostlb_tun, Init)
