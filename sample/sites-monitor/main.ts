import { bootstrap } from '../common/bootstrap';
import { config, SitesMonitorModule } from './sites-monitor.module';

void bootstrap(SitesMonitorModule, config);
