// IP addresses as the control path writes them and the packet path reads them:
// text for people, bytes and 32-bit words for the dispatcher. Parsing here is
// strict and returns null on anything that is not a plain address.

import { isIPv4, isIPv6 } from 'node:net';

export interface IpAddress {
  readonly family: 4 | 6;
  /** 4 bytes for IPv4, 16 for IPv6, network order. */
  readonly bytes: Uint8Array;
  /** Canonical text (RFC 5952 compressed form for IPv6). */
  readonly text: string;
}

/** Parses an IPv4 or IPv6 address (no prefix, no zone, no brackets). Returns null when it is not one. */
export function parseIp(text: string): IpAddress | null {
  if (isIPv4(text)) {
    const bytes = new Uint8Array(text.split('.').map(Number));
    return { family: 4, bytes, text: formatIpv4Bytes(bytes, 0) };
  }
  if (isIPv6(text) && !text.includes('%')) {
    const bytes = ipv6Bytes(text);
    return { family: 6, bytes, text: formatIpv6(bytes, 0) };
  }
  return null;
}

function ipv6Bytes(text: string): Uint8Array {
  let head = text;
  let tail = '';
  const gap = text.indexOf('::');
  if (gap !== -1) {
    head = text.slice(0, gap);
    tail = text.slice(gap + 2);
  }
  const toWords = (part: string): number[] => {
    if (part === '') return [];
    const words: number[] = [];
    for (const piece of part.split(':')) {
      if (piece.includes('.')) {
        const v4 = piece.split('.').map(Number);
        words.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        words.push(parseInt(piece, 16));
      }
    }
    return words;
  };
  const headWords = toWords(head);
  const tailWords = toWords(tail);
  const words = [...headWords, ...new Array<number>(8 - headWords.length - tailWords.length).fill(0), ...tailWords];
  const bytes = new Uint8Array(16);
  words.forEach((w, i) => { bytes[2 * i] = w >>> 8; bytes[2 * i + 1] = w & 0xff; });
  return bytes;
}

/** Dotted-quad text of an IPv4 address given as an unsigned 32-bit number. */
export function formatIpv4(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 0xff}.${(addr >>> 8) & 0xff}.${addr & 0xff}`;
}

export function formatIpv4Bytes(buf: Uint8Array, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/** RFC 5952 text of the 16-byte IPv6 address at `buf[off]`. */
export function formatIpv6(buf: Uint8Array, off: number): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((buf[off + 2 * i] << 8) | buf[off + 2 * i + 1]);
  // Longest run of two or more zero words becomes "::" (first one on a tie).
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = (ws: number[]): string => ws.map((w) => w.toString(16)).join(':');
  if (bestStart === -1) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`;
}

/** An IPv4 address's bytes as an unsigned 32-bit number. */
export function ipv4ToU32(bytes: Uint8Array): number {
  return ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
}

/** True for 127.0.0.0/8 and ::1: traffic to these can never leave the host. */
export function isLoopback(addr: IpAddress): boolean {
  if (addr.family === 4) return addr.bytes[0] === 127;
  return addr.bytes.every((b, i) => (i === 15 ? b === 1 : b === 0));
}

export interface Endpoint {
  readonly address: IpAddress;
  readonly port: number;
}

/**
 * Parses "198.18.2.1:8080" or "[2001:db8::1]:8080". Returns null when the text
 * is not an address and a port in 1..65535.
 */
export function parseEndpoint(text: string): Endpoint | null {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:]+):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const address = parseIp(m[1]);
  const port = Number(m[2]);
  if (!address || port < 1 || port > 65535) return null;
  // Brackets belong to IPv6 only (RFC 3986 §3.2.2), and IPv6 needs them: its colons would swallow the port.
  if ((address.family === 6) !== text.startsWith('[')) return null;
  return { address, port };
}

/** Text of an endpoint, with brackets around an IPv6 address. */
export function formatEndpoint(endpoint: Endpoint): string {
  return endpoint.address.family === 6 ? `[${endpoint.address.text}]:${endpoint.port}` : `${endpoint.address.text}:${endpoint.port}`;
}
