// Original file: proto/chainrule.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { Envelope as _chainrule_Envelope, Envelope__Output as _chainrule_Envelope__Output } from '../chainrule/Envelope.js';

export interface StageServiceClient extends grpc.Client {
  Call(argument: _chainrule_Envelope, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_chainrule_Envelope__Output>): grpc.ClientUnaryCall;
  Call(argument: _chainrule_Envelope, metadata: grpc.Metadata, callback: grpc.requestCallback<_chainrule_Envelope__Output>): grpc.ClientUnaryCall;
  Call(argument: _chainrule_Envelope, options: grpc.CallOptions, callback: grpc.requestCallback<_chainrule_Envelope__Output>): grpc.ClientUnaryCall;
  Call(argument: _chainrule_Envelope, callback: grpc.requestCallback<_chainrule_Envelope__Output>): grpc.ClientUnaryCall;
  call(argument: _chainrule_Envelope, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_chainrule_Envelope__Output>): grpc.ClientUnaryCall;
  call(argument: _chainrule_Envelope, metadata: grpc.Metadata, callback: grpc.requestCallback<_chainrule_Envelope__Output>): grpc.ClientUnaryCall;
  call(argument: _chainrule_Envelope, options: grpc.CallOptions, callback: grpc.requestCallback<_chainrule_Envelope__Output>): grpc.ClientUnaryCall;
  call(argument: _chainrule_Envelope, callback: grpc.requestCallback<_chainrule_Envelope__Output>): grpc.ClientUnaryCall;
  
  DeliverStream(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_chainrule_Envelope, _chainrule_Envelope__Output>;
  DeliverStream(options?: grpc.CallOptions): grpc.ClientDuplexStream<_chainrule_Envelope, _chainrule_Envelope__Output>;
  deliverStream(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_chainrule_Envelope, _chainrule_Envelope__Output>;
  deliverStream(options?: grpc.CallOptions): grpc.ClientDuplexStream<_chainrule_Envelope, _chainrule_Envelope__Output>;
  
}

export interface StageServiceHandlers extends grpc.UntypedServiceImplementation {
  Call: grpc.handleUnaryCall<_chainrule_Envelope__Output, _chainrule_Envelope>;
  
  DeliverStream: grpc.handleBidiStreamingCall<_chainrule_Envelope__Output, _chainrule_Envelope>;
  
}

export interface StageServiceDefinition extends grpc.ServiceDefinition {
  Call: MethodDefinition<_chainrule_Envelope, _chainrule_Envelope, _chainrule_Envelope__Output, _chainrule_Envelope__Output>
  DeliverStream: MethodDefinition<_chainrule_Envelope, _chainrule_Envelope, _chainrule_Envelope__Output, _chainrule_Envelope__Output>
}
