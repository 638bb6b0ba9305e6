// Why a packet is unusable. The checked constructors of the packet views return
// one of these codes instead of throwing; the dispatcher counts drops by name.

export const WireError = {
  None: 0,
  Truncated: 1,
  BadVersion: 2,
  BadHeaderLen: 3,
  BadTotalLen: 4,
  BadChecksum: 5,
  BadExtensionHeader: 6,
  BadLength: 7,
} as const;
export type WireError = (typeof WireError)[keyof typeof WireError];

/** Counter names, indexed by code (snake_case, as they appear in metrics). */
export const WIRE_ERROR_NAMES: readonly string[] = [
  'none',
  'truncated',
  'bad_version',
  'bad_header_length',
  'bad_total_length',
  'bad_checksum',
  'bad_extension_header',
  'bad_length',
];
