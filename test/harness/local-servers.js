// The launcher lives in scripts/ (the sample and the bench use it too); tests import it from here.
module.exports = require('../../scripts/local-servers');
