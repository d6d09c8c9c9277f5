// Original file: proto/chainrule.proto


export interface Envelope {
  'type'?: (string);
  'run'?: (string);
  'stage'?: (number);
  'step'?: (number);
  'microBatch'?: (number);
  'body'?: (Buffer | Uint8Array | string);
  'id'?: (number);
  'tensors'?: (Buffer | Uint8Array | string);
}

export interface Envelope__Output {
  'type': (string);
  'run': (string);
  'stage': (number);
  'step': (number);
  'microBatch': (number);
  'body': (Buffer);
  'id': (number);
  'tensors': (Buffer);
}
