import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { Envelope as _chainrule_Envelope, Envelope__Output as _chainrule_Envelope__Output } from './chainrule/Envelope.js';
import type { StageServiceClient as _chainrule_StageServiceClient, StageServiceDefinition as _chainrule_StageServiceDefinition } from './chainrule/StageService.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  chainrule: {
    Envelope: MessageTypeDefinition<_chainrule_Envelope, _chainrule_Envelope__Output>
    StageService: SubtypeConstructor<typeof grpc.Client, _chainrule_StageServiceClient> & { service: _chainrule_StageServiceDefinition }
  }
}

