import { IsNotEmpty, IsString } from 'class-validator';
import { EdgeListRequest, EdgeStatusRequest } from '../common/contracts';

// The bridge's requests as classes, so their shape is known at run time: the AsyncAPI document
// (sample/velocloud-bridge/asyncapi.json) takes their schemas from these decorators.

export class ListEdges implements EdgeListRequest {
  @IsString()
  @IsNotEmpty()
  request_id!: string;
}

export class GetEdgeStatus implements EdgeStatusRequest {
  @IsString()
  @IsNotEmpty()
  request_id!: string;

  @IsString()
  @IsNotEmpty()
  edge_id!: string;
}
