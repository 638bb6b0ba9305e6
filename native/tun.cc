// The TUN addon: opens a Linux TUN device, reads and writes batches of raw IP
// packets into memory the caller owns, and polls the fd with libuv. Nothing
// else: addresses, routes and rules live in src/net/, packet logic in src/dispatch/.
//
// Surface (see src/link/native.ts for the typed view):
//   open(name) -> { fd, name }          setPersist(fd, on)
//   getMtu(name) -> number              setMtu(name, mtu)
//   readBatch(fd, buffer, offsets, lengths, maxPackets, slotSize) -> count
//   writeBatch(fd, buffer, offsets, lengths, count) -> accepted
//   watch(fd, callback)   unwatch(fd)   close(fd)
//   netlinkOpen(protocol, groups, receiveBufferBytes) -> { fd, portId }
//   recvBatch(fd, buffer, offsets, lengths, maxPackets, slotSize) -> count   (sockets: one recvmmsg)
// readBatch/writeBatch/watch/close work on any datagram fd, so the netfilter
// data plane reads and writes its netlink sockets through them too; messages
// are built and parsed in TypeScript (src/netlink/).
// System errors throw an Error whose `code` is the errno name ('EPERM') and
// whose message names what failed ("TUNSETIFF hlb0: Operation not permitted").

#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

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
  // tells IPv4 from IPv6 by the version nibble on write.
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
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

// ---- batches ----------------------------------------------------------------

// The arguments readBatch and recvBatch share: (fd, buffer, offsets, lengths,
// maxPackets, slotSize). `max` is maxPackets clamped to both arrays.
struct BatchArgs {
  int fd;
  uint8_t* buffer;
  size_t bufferLength, offsetsLength, lengthsLength, max;
  uint32_t *offsets, *lengths, maxPackets, slotSize;
};

bool GetBatchArgs(const Napi::CallbackInfo& info, BatchArgs* a) {
  if (!GetFd(info, 0, &a->fd) || !GetBytes(info, 1, &a->buffer, &a->bufferLength) ||
      !GetUint32Array(info, 2, "offsets must be a Uint32Array", &a->offsets, &a->offsetsLength) ||
      !GetUint32Array(info, 3, "lengths must be a Uint32Array", &a->lengths, &a->lengthsLength) ||
      !GetUint32(info, 4, "maxPackets must be a non-negative integer", &a->maxPackets) ||
      !GetUint32(info, 5, "slotSize must be a non-negative integer", &a->slotSize)) {
    return false;
  }
  if (a->slotSize == 0) return ThrowRange(info.Env(), "slotSize must be > 0");
  a->max = a->maxPackets;
  if (a->offsetsLength < a->max) a->max = a->offsetsLength;
  if (a->lengthsLength < a->max) a->max = a->lengthsLength;
  return true;
}

Napi::Value ReadBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BatchArgs a;
  if (!GetBatchArgs(info, &a)) return env.Undefined();
  int fd = a.fd;
  uint8_t* buffer = a.buffer;
  size_t bufferLength = a.bufferLength;
  uint32_t *offsets = a.offsets, *lengths = a.lengths, slotSize = a.slotSize;
  size_t max = a.max;

  uint32_t count = 0;
  while (count < max) {
    size_t offset = offsets[count];
    if (offset >= bufferLength) {
      ThrowRange(env, "readBatch: offsets[i] lies outside the buffer");
      return env.Undefined();
    }
    size_t room = bufferLength - offset < slotSize ? bufferLength - offset : slotSize;
    ssize_t n = read(fd, buffer + offset, room);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      // Hand over what was read; a lasting error (EBADFD: device deleted)
      // comes back on the next call with nothing read before it.
      if (count > 0) break;
      ThrowSystemError(env, errno, "read from fd " + std::to_string(fd), "read");
      return env.Undefined();
    }
    if (n == 0) break;
    // tun_put_user() returns the packet's full length even when the slot was
    // too small and it copied less; clamp so the length never exceeds the
    // bytes present. The wire layer then sees totalLen > length: truncated.
    lengths[count] = static_cast<uint32_t>(static_cast<size_t>(n) > room ? room : static_cast<size_t>(n));
    count++;
  }
  return Napi::Number::New(env, count);
}

Napi::Value WriteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* buffer;
  size_t bufferLength, offsetsLength, lengthsLength;
  uint32_t *offsets, *lengths, count;
  if (!GetFd(info, 0, &fd) || !GetBytes(info, 1, &buffer, &bufferLength) ||
      !GetUint32Array(info, 2, "offsets must be a Uint32Array", &offsets, &offsetsLength) ||
      !GetUint32Array(info, 3, "lengths must be a Uint32Array", &lengths, &lengthsLength) ||
      !GetUint32(info, 4, "count must be a non-negative integer", &count)) {
    return env.Undefined();
  }
  size_t max = count;
  if (offsetsLength < max) max = offsetsLength;
  if (lengthsLength < max) max = lengthsLength;

  uint32_t accepted = 0;
  for (size_t i = 0; i < max; i++) {
    size_t offset = offsets[i], length = lengths[i];
    if (offset > bufferLength || length > bufferLength - offset) {
      ThrowRange(env, "writeBatch: packet lies outside the buffer");
      return env.Undefined();
    }
    // One write(2) per packet: a TUN fd takes exactly one packet per write
    // (tun_get_user), so writev would not batch anything either.
    ssize_t n;
    do {
      n = write(fd, buffer + offset, length);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
      accepted++;
      continue;
    }
    // EAGAIN/ENOBUFS: no memory for more skbs now. EIO: the device is
    // administratively down (tun_get_user). Either way the rest of the batch
    // is dropped, as a full NIC queue would drop it.
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EIO) break;
    // EINVAL/EMSGSIZE/EFAULT: the kernel refused this one packet (not IPv4 or
    // IPv6, too large, too short); drop it and send the next.
    if (errno == EINVAL || errno == EMSGSIZE || errno == EFAULT) continue;
    ThrowSystemError(env, errno, "write to TUN fd " + std::to_string(fd), "write");
    return env.Undefined();
  }
  return Napi::Number::New(env, accepted);
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

struct AddonState {
  std::unordered_map<int, Watch*> watches;
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

AddonState* State(Napi::Env env) {
  return env.GetInstanceData<AddonState>();
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
  exports.Set("watch", Napi::Function::New(env, WatchFd, "watch"));
  exports.Set("unwatch", Napi::Function::New(env, Unwatch, "unwatch"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("recvBatch", Napi::Function::New(env, RecvBatch, "recvBatch"));
  exports.Set("netlinkOpen", Napi::Function::New(env, NetlinkOpen, "netlinkOpen"));
  exports.Set("tryLock", Napi::Function::New(env, TryLock, "tryLock"));
  exports.Set("adviseHugePages", Napi::Function::New(env, AdviseHugePages, "adviseHugePages"));
  return exports;
}

}  // namespace

NODE_API_MODULE(hostlb_tun, Init)
