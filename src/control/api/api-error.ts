// Errors the admin API answers with: an HTTP status, a stable code scripts can
// match, a message that says what to change, and the field it concerns.

import { ConfigError, HostlbError } from '../../errors.js';

export class ApiError extends HostlbError {
  constructor(readonly status: number, code: string, message: string, readonly field?: string) {
    super(code, message);
  }
}

export const notFound = (code: string, message: string, field?: string): ApiError => new ApiError(404, code, message, field);
export const badRequest = (code: string, message: string, field?: string): ApiError => new ApiError(400, code, message, field);
export const conflict = (code: string, message: string, field?: string): ApiError => new ApiError(409, code, message, field);

/** The JSON body and status for any error a handler threw. */
export function errorResponse(e: unknown): { status: number; body: { error: { code: string; message: string; field?: string } } } {
  if (e instanceof ApiError) return { status: e.status, body: { error: { code: e.code, message: e.message, field: e.field } } };
  if (e instanceof ConfigError) {
    return { status: e.code === 'CONFIG_NEEDS_RESTART' ? 409 : 400, body: { error: { code: e.code, message: e.message, field: e.path || undefined } } };
  }
  if (e instanceof HostlbError) return { status: 500, body: { error: { code: e.code, message: e.message } } };
  return { status: 500, body: { error: { code: 'INTERNAL', message: String((e as Error)?.message ?? e) } } };
}
