// Types of the framecache Node binding (bindings/node/index.js).

export declare class FramecacheError extends Error {
  /** The FC_ERR_* name, e.g. "FC_ERR_TIMEOUT". */
  code: string;
  /** The FC_ERR_* value (negative). */
  errno: number;
}

export interface ReadOptions {
  /** Milliseconds to wait (default 1000; negative = forever). */
  timeoutMs?: number;
}

export declare class Frame {
  seq: number;
  pts: number;
  skipped: number;
  flags: number;
  width: number;
  height: number;
  fourcc: number;
  format: string;
  strides: number[];
  offsets: number[];
  /** The frame's bytes: a zero-copy view for `read()`, owned for `readCopy()`. */
  data: Uint8Array;
  /** Whether the frame was not overwritten since it was read. */
  intact(): boolean;
}

declare class Handle {
  close(): void;
  [Symbol.dispose](): void;
}

export declare class Consumer extends Handle {
  constructor(slot: string, opts?: { mode?: 'sequential' | 'latest'; start?: 'newest' | 'oldest' | 'next' });
  slot: string;
  read(opts?: ReadOptions): Promise<Frame>;
  readCopy(opts?: ReadOptions): Promise<Frame>;
  stats(): Record<string, number | bigint>;
  [Symbol.asyncIterator](): AsyncIterator<Frame>;
}

export declare class Producer extends Handle {
  constructor(slot: string, opts: { format: string | number; width: number; height: number; fpsNum?: number; fpsDen?: number; depth?: number; keep?: boolean });
  write(data: ArrayBufferView, pts?: number): number;
}

export interface Packet {
  stream: number;
  pts: number;
  dts: number;
  keyframe: boolean;
  seq: number;
  paramsGen: number;
  /** Zero-copy view, valid until the next read. */
  data: Uint8Array;
  intact(): boolean;
}

export interface StreamInfo {
  codec: number;
  media: number;
  timebase: [number, number];
  width: number;
  height: number;
  sampleRate: number;
  channels: number;
  paramsGen: number;
}

export declare class PacketReader extends Handle {
  constructor(slot: string, opts?: { start?: 'keyframe' | 'oldest_keyframe' | 'next' });
  streams(): StreamInfo[];
  read(opts?: ReadOptions): Promise<Packet>;
  codecParams(stream: number, gen?: number): [number, Buffer];
  [Symbol.asyncIterator](): AsyncIterator<Packet>;
}

export declare class PacketWriter extends Handle {
  constructor(slot: string, streams: Array<{ codec: string | number; timebase?: [number, number]; width?: number; height?: number; sampleRate?: number; channels?: number }>, opts?: { payloadSize?: number; keep?: boolean });
  setCodecParams(stream: number, data: ArrayBufferView): number;
  publish(stream: number, data: ArrayBufferView, opts: { pts: number; dts?: number; keyframe?: boolean }): number;
}

export interface SlotInfo {
  id: string;
  kind: 'frames' | 'packets';
  format?: string;
  width: number;
  height: number;
  fps: [number, number];
  depth: number;
  writerPid: number;
  writerAlive: boolean;
  frameSize: number;
  framesWritten: number;
  codecs: number[];
}

export declare function info(slot: string): SlotInfo;
export declare function version(): string;
export declare const libraryPath: string;
/** `true` once a read gave a zero-copy view; `false` where external buffers are forbidden
 * (Electron's memory cage) or `FRAMECACHE_NODE_COPY=1`: reads then copy; `null` before the first read. */
export declare const zeroCopy: boolean | null;
export declare const FOURCC: Record<string, number>;
export declare const CODEC: Record<string, number>;

export interface IngestEvent {
  kind: 'connected' | 'disconnected' | 'mediaInfo' | 'inputFailed' | 'refused' | 'packet';
  /** The slot the event is about ('' for a refused unknown key). */
  slot: string | null;
  input: string | null;
  reason: string | null;
  /** inputFailed: the input's place in the slot's list (0 = highest priority). */
  priority: number;
  /** packet: stream index, payload bytes, keyframe flag, 90 kHz times. */
  stream: number;
  size: number;
  keyframe: boolean;
  pts: number;
  dts: number;
  codecs: number[];
  width: number;
  height: number;
  sampleRate: number;
  channels: number;
}

export declare class Ingest extends Handle {
  constructor();
  onEvent(fn: (event: IngestEvent) => void): void;
  /** The events of one slot, beside onEvent; null stops. */
  onStreamEvent(slot: string, fn: ((event: IngestEvent) => void) | null): void;
  /** Failures (inputFailed, refused) and per-packet events on or off. */
  observe(opts?: { failures?: boolean; packets?: boolean }): void;
  listen(url: string): string;
  /** RTMP play of listeners started afterwards: on/off, the viewer token (`?token=`), caps (0 = none). */
  setPlayAccess(opts?: { enabled?: boolean; token?: string | null; maxPerStream?: number; maxTotal?: number }): void;
  registerKey(key: string, slot: string, passphrase?: string | null): void;
  unregisterKey(key: string): void;
  add(slot: string, urls: string[]): void;
  remove(slot: string): void;
  stats(name: string): { connected: boolean; bytes: number; packets: number; dropped: number; bitrate: number; reconnects: number; currentInput: number };
}

export declare class Whep extends Handle {
  constructor(opts?: { ingest?: Ingest | null; token?: string | null; allowedOrigins?: string | null; maxViewersPerStream?: number; maxViewersTotal?: number });
  listen(addr: string): string;
  closeStream(stream: string): number;
  /** The viewer token of one stream (beside the engine's token); `null` removes it. */
  setStreamToken(stream: string, token: string | null): void;
  /** Takes WHIP publishers (`POST /whip/KEY`) into `ingest`'s stream keys; `null` turns WHIP off. */
  acceptWhip(ingest: Ingest | null): void;
  stats(stream?: string | null): Record<string, number>;
}

/** Routes the library's log to `fn` (levels 1 error … 5 trace); null silences it. */
export declare function setLogger(fn: ((level: number, target: string, message: string) => void) | null, minLevel?: number): void;
