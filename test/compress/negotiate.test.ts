// Accept-Encoding negotiation (RFC 9110 §12.5.3), table-driven, as the stage and the cache use it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pickEncoding, memoSize } from '../../src/compress/negotiate.js'

const ALL = ['br', 'gzip', 'deflate', 'identity']
const BR_GZIP = ['br', 'gzip']

// [Accept-Encoding, available, order, expected]
const cases: [string | undefined, string[], string[], string | null][] = [
  [undefined, ALL, BR_GZIP, 'identity'], // a client that says nothing gets identity
  [undefined, ['gzip'], BR_GZIP, 'gzip'], // ...unless identity is not stored: any coding is acceptable then
  ['', ALL, BR_GZIP, 'identity'], // empty: no coding wanted
  ['gzip', ALL, BR_GZIP, 'gzip'],
  ['br', ALL, BR_GZIP, 'br'],
  ['gzip, br', ALL, BR_GZIP, 'br'], // equal q: the route's order decides
  ['gzip, br', ALL, ['gzip', 'br'], 'gzip'],
  ['br;q=0.5, gzip;q=0.9', ALL, BR_GZIP, 'gzip'],
  ['br;q=0.5, gzip', ALL, BR_GZIP, 'gzip'],
  ['gzip;q=0.2, identity;q=0.5', ALL, BR_GZIP, 'identity'],
  ['gzip, identity', ALL, BR_GZIP, 'gzip'], // identity ties lose to a coding
  ['identity', ALL, BR_GZIP, 'identity'],
  ['identity;q=0', ALL, BR_GZIP, null], // nothing acceptable
  ['identity;q=0, gzip', ALL, BR_GZIP, 'gzip'],
  ['*', ALL, BR_GZIP, 'br'],
  ['*;q=0', ALL, BR_GZIP, null],
  ['*;q=0, identity', ALL, BR_GZIP, 'identity'],
  ['br;q=0, *', ALL, BR_GZIP, 'gzip'], // br refused by name; * covers gzip (the library gave br here)
  ['br;q=0, gzip;q=0', ALL, BR_GZIP, 'identity'],
  ['*;q=0.5, gzip', ALL, BR_GZIP, 'gzip'],
  ['deflate', ALL, BR_GZIP, 'identity'], // deflate only when the route lists it
  ['deflate', ALL, ['gzip', 'deflate'], 'deflate'],
  ['br, deflate;q=0.1', ALL, ['gzip', 'deflate'], 'deflate'],
  ['zstd, compress', ALL, BR_GZIP, 'identity'], // unknown codings: identity
  ['GZIP', ALL, BR_GZIP, 'gzip'], // codings are case-insensitive
  ['x-gzip', ALL, BR_GZIP, 'gzip'], // RFC 9110 §8.4.1.3
  [' br ; q=0.5 ,gzip ; Q=0.4 ', ALL, BR_GZIP, 'br'], // whitespace, Q
  ['gzip;level=1;q=0.5, br;q=0.4', ALL, BR_GZIP, 'gzip'], // other parameters ignored
  ['gzip;q=2, br;q=0.3', ALL, BR_GZIP, 'br'], // an invalid q drops that element
  ['gzip;q=0.001', ALL, BR_GZIP, 'gzip'],
  ['gzip, gzip;q=0', ALL, BR_GZIP, 'gzip'], // the first mention counts
  [',,, ,gzip,', ALL, BR_GZIP, 'gzip'],
  ['br', ['gzip', 'identity'], BR_GZIP, 'identity'], // br not stored
  ['br', ['gzip'], BR_GZIP, null],
  ['gzip', ['br', 'gzip', 'identity'], ['br'], 'identity'] // not in the route's order: never picked
]

for (const [ae, available, order, expected] of cases) {
  test(`Accept-Encoding ${JSON.stringify(ae)}, stored [${available}], order [${order}] → ${expected}`, () => {
    assert.equal(pickEncoding(ae, available, order), expected)
    assert.equal(pickEncoding(ae, available, order), expected, 'the memoised answer is the same')
  })
}

test('the memo is bounded: many distinct header values do not grow it past its cap', () => {
  for (let i = 0; i < 5000; i++) pickEncoding(`gzip;q=0.${i % 1000}, x-${i}`, ALL, BR_GZIP)
  assert.ok(memoSize() <= 512, `memo holds ${memoSize()}`)
  assert.equal(pickEncoding('gzip', ALL, BR_GZIP), 'gzip')
})
