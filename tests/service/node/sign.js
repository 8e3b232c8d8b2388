// Prints the X-Twilio-Signature that Twilio's official helper library computes.
//   node sign.js <auth token> <url> [name value]...
// and with --validate <signature> first, prints whether the library accepts it (true/false).
const twilio = require('twilio');

const args = process.argv.slice(2);
let validate = null;
if (args[0] === '--validate') {
  validate = args[1];
  args.splice(0, 2);
}
const [token, url, ...pairs] = args;
const params = {};
for (let i = 0; i + 1 < pairs.length; i += 2) params[pairs[i]] = pairs[i + 1];
if (validate !== null) {
  console.log(twilio.validateRequest(token, validate, url, params) ? 'true' : 'false');
} else {
  console.log(twilio.getExpectedTwilioSignature(token, url, params));
}
