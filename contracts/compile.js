#!/usr/bin/env node
// Compile ORB's contracts with the solc pinned in package.json, through the
// standard-JSON interface, and write one artifact per contract to build/:
//   { contractName, abi, bytecode, deployedBytecode, solcVersion, evmVersion, settings }
// Deterministic: no metadata hash (bytecodeHash "none"), so the committed
// artifact can be compared byte for byte with a fresh compile.
//
//   node compile.js              compile every source below, write build/*.json
//   node compile.js --check      compile, compare with build/, exit 1 on a difference
//   node compile.js --stdout X   compile X.sol, print its artifact (no write)
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const HERE = __dirname;
const SOURCES = ['OrbEscrow.sol', 'PerReceiptBaseline.sol', 'ReentrantHost.sol'];
const SETTINGS = {
  evmVersion: 'shanghai',
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: 'none' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function compile(names) {
  const sources = {};
  for (const name of names) {
    sources[name] = { content: fs.readFileSync(path.join(HERE, name), 'utf8') };
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + '\n');
  if (errors.length) process.exit(1);
  const artifacts = {};
  for (const name of names) {
    for (const [contractName, c] of Object.entries(output.contracts[name] || {})) {
      artifacts[contractName] = {
        contractName,
        abi: c.abi,
        bytecode: '0x' + c.evm.bytecode.object,
        deployedBytecode: '0x' + c.evm.deployedBytecode.object,
        solcVersion: solc.version(),
        evmVersion: SETTINGS.evmVersion,
        settings: { optimizer: SETTINGS.optimizer, metadata: SETTINGS.metadata },
      };
    }
  }
  return artifacts;
}

function render(artifact) {
  return JSON.stringify(artifact, null, 2) + '\n';
}

function main(argv) {
  const buildDir = path.join(HERE, 'build');
  if (argv[0] === '--stdout') {
    const artifacts = compile([argv[1] + '.sol']);
    process.stdout.write(render(artifacts[argv[1]]));
    return 0;
  }
  const artifacts = compile(SOURCES);
  if (argv[0] === '--check') {
    let stale = 0;
    for (const [name, a] of Object.entries(artifacts)) {
      const file = path.join(buildDir, name + '.json');
      const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
      if (old !== render(a)) {
        process.stderr.write(`build/${name}.json differs from a fresh compile: run node compile.js\n`);
        stale += 1;
      }
    }
    return stale ? 1 : 0;
  }
  fs.mkdirSync(buildDir, { recursive: true });
  for (const [name, a] of Object.entries(artifacts)) {
    fs.writeFileSync(path.join(buildDir, name + '.json'), render(a));
    process.stdout.write(`build/${name}.json  ${(a.deployedBytecode.length - 2) / 2} bytes deployed\n`);
  }
  return 0;
}

process.exit(main(process.argv.slice(2)));
