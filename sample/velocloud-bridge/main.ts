import { bootstrap } from '../common/bootstrap';
import { config, VelocloudBridgeModule } from './velocloud-bridge.module';

void bootstrap(VelocloudBridgeModule, config);
