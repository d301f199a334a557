// nginx njs filter: error answers of MLflow's scoring server lose their Python stack trace,
// nothing else. Status, error_code, message and content type stay MLflow's, so a client sees
// what `mlflow models serve` answers. Successful answers pass through untouched and unbuffered.
var chunks = [];

function headers(r) {
    if (r.status >= 400) {
        delete r.headersOut['Content-Length'];  // the body may lose its stack trace
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
        if (parsed && typeof parsed === 'object' && 'stack_trace' in parsed) {
            delete parsed.stack_trace;
            text = JSON.stringify(parsed);
        }
    } catch (e) {
        // Not JSON (MLflow's plain-text 415, Starlette's 500): as it is, unless it is a trace.
        if (text.indexOf('Traceback') >= 0) {
            text = 'request rejected';
        }
    }
    r.sendBuffer(text, flags);
}

export default {headers, body};
