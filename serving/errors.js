// nginx njs filter: error answers of MLflow's scoring server lose their Python stack trace and
// keep a one-line message. Successful answers pass through untouched and unbuffered.
var chunks = [];

function oneLine(text) {
    return text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().substring(0, 500);
}

function headers(r) {
    if (r.status >= 400) {
        delete r.headersOut['Content-Length'];
        r.headersOut['Content-Type'] = 'application/json';
    }
}

function body(r, data, flags) {
    if (r.status < 400) {
        r.sendBuffer(data, flags);
        return;
    }
    chunks.push(data);
    if (!flags.last) {
        return;
    }
    var text = chunks.join('');
    try {
        var parsed = JSON.parse(text);
        if (parsed && typeof parsed === 'object') {
            delete parsed.stack_trace;
            if (typeof parsed.message === 'string') {
                parsed.message = oneLine(parsed.message);
            }
            text = JSON.stringify(parsed) + '\n';
        }
    } catch (e) {
        // Not JSON (e.g. a plain-text 415): wrap it, keeping a readable reason but no trace.
        var reason = text.indexOf('Traceback') >= 0 ? 'request rejected' : oneLine(text);
        text = JSON.stringify({error_code: 'BAD_REQUEST', message: reason}) + '\n';
    }
    r.sendBuffer(text, flags);
}

export default {headers, body};
