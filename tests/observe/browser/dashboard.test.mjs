// The dashboard page in a real browser: Debian's Chromium, driven by
// playwright-core, against a running program's dashboard (run.sh starts the
// fixture and passes its address in EMBER_DASHBOARD_URL). The steps run in
// order, each on what the one before left: the table, a sort, a filter, the
// detail of worker_a, killing it, its supervisor's restart, the tree.
// A screenshot is left in EMBER_TEST_OUTPUT (default: the current folder).
//
//   EMBER_DASHBOARD_URL=http://127.0.0.1:PORT/ node --test dashboard.test.mjs
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const URL = process.env.EMBER_DASHBOARD_URL;
// The registered name of a supervised process to open, kill and see restarted.
const TARGET = process.env.EMBER_DASHBOARD_TARGET || 'worker_a';
const OUT = process.env.EMBER_TEST_OUTPUT || process.cwd();
const CHROMIUM = process.env.EMBER_CHROMIUM || '/usr/bin/chromium';
const WAIT = 20_000;           // for the page to show something (a loaded CI machine)
const RESTART_WAIT = 10_000;   // for the supervisor's restart to show in the table
const STEP = { timeout: 60_000 };
const STATUSES = ['runnable', 'running', 'waiting', 'blocking', 'exiting'];

let browser, page;
const pageErrors = [];
const consoleErrors = [];
let screenshotTaken = false;
let failedStep = null;         // a step that failed: the ones after it are skipped
const seen = {};               // what one step found, for the next ones

// A step that runs only if every step before it passed (each builds on the
// page the one before left), so a failure is reported once, where it happened.
function step(name, fn) {
  it(name, STEP, async t => {
    if (failedStep) { t.skip(`"${failedStep}" failed`); return; }
    try {
      await fn();
    } catch (e) {
      failedStep = name;
      throw e;
    }
  });
}

async function screenshot() {
  fs.mkdirSync(OUT, { recursive: true });
  const file = path.join(OUT, 'dashboard.png');
  await page.screenshot({ path: file, fullPage: true });
  screenshotTaken = true;
  return file;
}

describe('dashboard page', () => {
  before(async () => {
    assert.ok(URL, 'EMBER_DASHBOARD_URL is not set: run tests/observe/browser/run.sh FIXTURE OUTPUT_DIR');
    assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium (or set EMBER_CHROMIUM)`);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
             '--disable-sync', '--disable-quic', '--no-first-run'],
    });
    page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    page.setDefaultTimeout(WAIT);
    page.on('pageerror', e => pageErrors.push(String(e && e.stack || e)));
    page.on('console', m => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  });

  after(async () => {
    if (page && !screenshotTaken) {
      try { console.log(`screenshot of the page as the test left it: ${await screenshot()}`); } catch { /* no page */ }
    }
    if (consoleErrors.length) console.log(`browser console errors:\n  ${consoleErrors.join('\n  ')}`);
    if (browser) await browser.close();
  });

  step(`the process table lists the processes, ${TARGET} among them`, async () => {
    await page.goto(URL, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#process-table tbody tr[data-pid]');
    const rows = await page.locator('#process-table tbody tr[data-pid]').count();
    assert.ok(rows > 0, 'the table shows no process');
    // Show up to 5,000 rows so that worker_a is listed however many
    // processes the program runs.
    await page.selectOption('#limit', '5000');
    await page.waitForSelector(`#process-table tbody tr[data-name="${TARGET}"]`);
    const info = await page.textContent('#node-info');
    assert.match(info, /os pid \d+/, `the header shows no node: "${info}"`);
    const processes = await page.textContent('.figure[data-figure="processes"] .value');
    assert.ok(Number(processes.replace(/,/g, '')) > 0, `the processes figure is "${processes}"`);
  });

  step('clicking the memory header sorts by memory, largest first', async () => {
    await page.click('#process-table th[data-sort="memory"]');
    await page.waitForSelector('#process-table[data-sort="memory"] tbody tr[data-pid]');
    // Read the whole column at once (a refresh may replace the rows any
    // time), until it is in order: one CI run read a column out of order by
    // one pair of rows once (not understood yet; the next refresh was in
    // order). A column that stays out of order fails below.
    await page.waitForFunction(() => {
      const v = [...document.querySelectorAll('#process-table tbody tr[data-pid] td[data-col="memory"]')]
        .map(td => Number(td.dataset.value));
      return v.length > 0 && v.every((x, i) => i === 0 || x <= v[i - 1]);
    }, null, { timeout: WAIT }).catch(() => { /* reported below, row by row */ });
    const memory = await page.$$eval('#process-table tbody tr[data-pid] td[data-col="memory"]',
                                     tds => tds.map(td => Number(td.dataset.value)));
    assert.ok(memory.length > 0, 'no rows after sorting');
    for (let i = 1; i < memory.length; i++) {
      assert.ok(memory[i] <= memory[i - 1], `row ${i + 1} has ${memory[i]} bytes, more than row ${i}'s ${memory[i - 1]}`);
    }
    assert.equal(await page.getAttribute('#process-table th[data-sort="memory"]', 'aria-sort'), 'descending');
  });

  step('typing in the filter box leaves only the matching processes', async () => {
    await page.fill('#filter', TARGET);
    await page.waitForSelector(`#process-table[data-filter="${TARGET}"] tbody tr[data-name="${TARGET}"]`);
    const rows = await page.$$eval('#process-table tbody tr[data-pid]', trs => trs.map(tr => ({
      pid: tr.dataset.pid,
      text: `${tr.dataset.pid} ${tr.querySelector('td[data-col="name"]').textContent}`,
    })));
    assert.ok(rows.length > 0);
    for (const r of rows) {
      assert.ok(r.text.toLowerCase().includes(TARGET.toLowerCase()), `row <${r.pid}> does not match "${TARGET}": ${r.text}`);
    }
  });

  step(`clicking ${TARGET} opens its detail: pid, status, links`, async () => {
    const row = page.locator(`#process-table tbody tr[data-name="${TARGET}"]`).first();
    const pid = await row.getAttribute('data-pid');
    await row.click();
    await page.waitForSelector(`#detail[data-state="alive"][data-pid="${pid}"]`);
    assert.ok((await page.textContent('#detail dd[data-field="pid"]')).includes(pid));
    const status = (await page.textContent('#detail dd[data-field="status"]')).trim();
    assert.ok(STATUSES.includes(status), `status "${status}"`);
    const links = await page.$$eval('#detail dd[data-field="links"] .pid-link', bs => bs.map(b => b.dataset.pid));
    assert.ok(links.length > 0,
      `${TARGET} shows no links (its supervisor links to it): "${await page.textContent('#detail dd[data-field="links"]')}"`);
    assert.equal(await page.getAttribute(`#process-table tbody tr[data-pid="${pid}"]`, 'aria-selected'), 'true');
    seen.pid = pid;
    seen.links = links;
  });

  step(`Kill asks for confirmation, and the supervisor restarts ${TARGET} under a new pid`, async () => {
    let dialog = null;
    page.once('dialog', async d => {
      dialog = { type: d.type(), message: d.message() };
      await d.accept();
    });
    await page.click('#kill-button');
    await page.waitForFunction(() => document.querySelector('#detail')?.dataset.state === 'gone');
    assert.ok(dialog, 'Kill asked for no confirmation');
    assert.equal(dialog.type, 'confirm');
    assert.ok(dialog.message.includes(seen.pid), `the confirmation does not name <${seen.pid}>: ${dialog.message}`);
    const handle = await page.waitForFunction(([old, target]) => {
      const tr = document.querySelector(`#process-table tbody tr[data-name="${target}"]`);
      return tr && tr.dataset.pid !== old ? tr.dataset.pid : null;
    }, [seen.pid, TARGET], { timeout: RESTART_WAIT, polling: 100 });
    seen.newPid = await handle.jsonValue();
    assert.notEqual(seen.newPid, seen.pid);
  });

  step(`the supervision tree shows ${TARGET} under its supervisor`, async () => {
    const handle = await page.waitForFunction(([pid, target]) => {
      const li = document.querySelector(`#tree li[data-child="${target}"][data-pid="${pid}"]`);
      const parent = li && li.parentElement.closest('li');
      return parent ? { supervisor: parent.dataset.supervisor, pid: parent.dataset.pid, child: parent.dataset.child } : null;
    }, [seen.newPid, TARGET], { polling: 100 });
    const parent = await handle.jsonValue();
    assert.equal(parent.supervisor, 'true', `${TARGET} is under "${parent.child}", not a supervisor`);
    assert.ok(seen.links.includes(parent.pid),
      `${TARGET}'s supervisor <${parent.pid}> (${parent.child}) is not among its links ${seen.links.join(', ')}`);
  });

  step('the page raised no error and put no server text in as HTML', async () => {
    assert.deepEqual(pageErrors, []);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
  });

  step('screenshot', async () => {
    await page.fill('#filter', '');
    await page.waitForSelector('#process-table[data-filter=""] tbody tr[data-pid]');
    await page.click(`#process-table tbody tr[data-pid="${seen.newPid}"]`).catch(() => {});
    await page.waitForSelector('#detail[data-state="alive"]').catch(() => {});
    console.log(`screenshot: ${await screenshot()}`);
  });
});
