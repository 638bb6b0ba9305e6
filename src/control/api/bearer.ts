// The one check of an `Authorization: Bearer <token>` header, shared by the
// TCP admin listener and `hostlb dashboard`: compared in constant time, so
// the answer's timing says nothing about how much of a guess was right.

import { timingSafeEqual } from 'node:crypto';

export function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (!m) return false;
  const given = Buffer.from(m[1]);
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}
