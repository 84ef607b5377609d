import { bootstrap } from '../common/bootstrap';
import { config, NotifierModule } from './notifier.module';

void bootstrap(NotifierModule, config);
