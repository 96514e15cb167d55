import type { Classification } from '../classify/classifier.js';
import type { Config } from '../config/types.js';
import type { ServerConnection } from '../pool/server-connection.js';
import type { FrameReader } from '../protocol/frame-reader.js';
import type { ServerMessageScanner } from '../protocol/server-scanner.js';
import type { CausalityHost } from './causality-token.js';
import type { ClientStatements, StatementPayload } from './client-statements.js';
import type { ClientTransaction } from './client-transaction.js';
import type { DeallocateHost, ExtendedDeallocate } from './extended-deallocate.js';
import type { ServerStatement, StatementRegistry } from './prepared-statements.js';
import type { RecentClassification } from './recent-classification.js';
import type { ReplayWindow } from './replay-window.js';
import type { ResponseQueue } from './response-queue.js';
import type { ServerLease } from './server-lease.js';
import type { RepliesHost, ServerReplies } from './server-replies.js';
import type { SessionEffects } from './session-effects.js';
import type { SessionServices } from './session-services.js';
import type { StatementHost, StatementMessages } from './statement-messages.js';
import type { PlacementHost, UnitPlacement } from './unit-placement.js';
import type { SessionState } from './session-state.js';
import { OPEN, type Step, type UnitState, type WaitReason } from './unit-state.js';

/**
 * What the links reach of their session (ClientSession): its parts, and the steps the parts call
 * back. Members of ClientSession that are not private only for the links.
 */
export interface LinkedSession {
  readonly user: string;
  readonly database: string;
  readonly services: SessionServices;
  readonly lease: ServerLease;
  readonly scanner: ServerMessageScanner;
  readonly queue: ResponseQueue<StatementPayload>;
  readonly replies: ServerReplies;
  readonly placement: UnitPlacement;
  readonly named: StatementMessages;
  readonly deallocates: ExtendedDeallocate;
  readonly statements: ClientStatements;
  readonly effects: SessionEffects;
  readonly state: SessionState;
  readonly replayWindow: ReplayWindow;
  readonly tx: ClientTransaction;
  readonly recent: RecentClassification;
  readonly reader: FrameReader;
  readonly closed: boolean;
  readonly pinned: boolean;
  readonly clientBytes: number;
  readonly unitOpen: boolean;
  answeredHere: boolean;
  move(next: UnitState): void;
  park(why: WaitReason, holds: boolean, resume?: Step): void;
  resumeWith(next: Step): void;
  failUnit(error: unknown): void;
  sendToClient(data: Buffer): void;
  sendHead(data: Buffer): void;
  fatal(error: unknown): void;
  pin(): void;
  maybeRelease(): void;
  lost(conn: ServerConnection, error: Error | undefined): void;
  replay(node: string): boolean;
  answerOrphaned(classification: Classification | undefined, simple: boolean): void;
}

/*
 * The hosts the session's parts are built with (RepliesHost, PlacementHost, StatementHost, CausalityHost, DeallocateHost), as
 * one small object each whose methods live on the prototype: an object literal of arrow
 * functions per part cost every session, idle or not, some 50 closures (about 3 KB).
 */

/** The session's parts, as every link hands them on (each host interface takes the ones it names). */
abstract class PartsLink {
  constructor(readonly session: LinkedSession) {}
  get services(): SessionServices { return this.session.services; }
  get lease(): ServerLease { return this.session.lease; }
  get scanner(): ServerMessageScanner { return this.session.scanner; }
  get queue(): ResponseQueue<StatementPayload> { return this.session.queue; }
  get replies(): ServerReplies { return this.session.replies; }
  get replayWindow(): ReplayWindow { return this.session.replayWindow; }
  get statements(): ClientStatements { return this.session.statements; }
  get effects(): SessionEffects { return this.session.effects; }
  get tx(): ClientTransaction { return this.session.tx; }
  unitOpen(): boolean { return this.session.unitOpen; }
  clientBytes(): number { return this.session.clientBytes; }
  sendToClient(data: Buffer): void { this.session.sendToClient(data); }
}

/** The session as ServerReplies sees it. */
export class RepliesLink extends PartsLink implements RepliesHost {
  isClosed(): boolean { return this.session.closed; }
  pin(): void { this.session.pin(); }
  unitBeganAt(): number { return this.session.placement.unitBeganAt; }
  attachedForPrimary(): boolean { return this.session.placement.attachTarget === 'primary'; }
  sendHead(data: Buffer): void { this.session.sendHead(data); }
  fatal(error: unknown): void { this.session.fatal(error); }
  unitsEnded(): void { this.session.maybeRelease(); }
  lost(conn: ServerConnection, error: Error | undefined): void { this.session.lost(conn, error); }
  runAgain(node: string): boolean { return this.session.replay(node); }
  answerDeallocated(name: string | null, statement: ServerStatement | undefined): void { this.session.named.answerDeallocated(name, statement); }
  forgetDeallocated(name: string | null, statement: ServerStatement | undefined): void { this.session.named.forgetDeallocated(name, statement); }
}

/** The session as UnitPlacement sees it. */
export class PlacementLink extends PartsLink implements PlacementHost {
  // own properties, not methods: UnitPlacement hands these on to its optimistic transaction taken off its host (unbound)
  readonly park = (why: WaitReason, resume: Step | undefined): void => this.session.park(why, true, resume);
  readonly resumeWith = (next: Step): void => this.session.resumeWith(next);
  readonly failUnit = (error: unknown): void => this.session.failUnit(error);
  readonly isClosed = (): boolean => this.session.closed;
  get handler(): ServerReplies { return this.session.replies; }
  get state(): SessionState { return this.session.state; }
  get reader(): FrameReader { return this.session.reader; }
  openUnit(): void { this.session.move(OPEN); }
  answerOrphaned(classification: Classification | undefined): void { this.session.answerOrphaned(classification, false); }
  pinned(): boolean { return this.session.pinned; }
  statement(name: string): StatementPayload | undefined { return name === '' ? this.session.statements.unnamedPayload : this.session.statements.get(name); }
  awaitInput(): void { this.session.reader.waitForMore(); }
}

/** The session as StatementMessages sees it. */
export class StatementLink extends PartsLink implements StatementHost {
  get registry(): StatementRegistry { return this.session.services.statements; }
  orphaned(): boolean { return this.session.tx.orphaned; }
  classify(text: string): Classification { return this.session.recent.classify(this.session.services.classifier, text); }
  beginExtendedUnit(classification: Classification | undefined, then: Step): void { this.session.placement.beginExtendedUnit(classification, then); }
  beginWithoutServer(head: Buffer): void {
    this.session.move(OPEN);
    this.session.sendHead(head);
  }
  txStatus(): number { return this.session.tx.status; }
  waitForOutcome(): void { this.session.park('drain', false); }
  pinned(): boolean { return this.session.pinned; }
  holdBegin(classification: Classification, text: string): ReturnType<StatementHost['holdBegin']> { return this.session.placement.holdExtendedBegin(classification, text); }
  beginHeld(): boolean { return this.session.tx.beginDeferred; }
  holdDeallocate(name: string, classification: Classification, hasParameterTypes: boolean): boolean {
    const held = this.session.deallocates.parsed(name, classification, hasParameterTypes);
    if (held) this.session.answeredHere = true;
    return held;
  }
  config(): Config { return this.session.services.config(); }
}

/** The session as CausalityToken sees it. */
export class CausalityLink extends PartsLink implements CausalityHost {
  txStatus(): number { return this.session.tx.status; }
  openUnit(): void { this.session.move(OPEN); }
  park(): void { this.session.park('fence', true); }
  resumeWith(next: Step): void { this.session.resumeWith(next); }
  failUnit(error: unknown): void { this.session.failUnit(error); }
}

/** The session as ExtendedDeallocate sees it. */
export class DeallocateLink extends PartsLink implements DeallocateHost {
  txStatus(): number { return this.session.tx.status; }
  pinned(): boolean { return this.session.pinned; }
  openUnit(): void { this.session.move(OPEN); }
  failUnit(error: unknown): void { this.session.failUnit(error); }
  forgetDeallocated(name: string | null, statement: ServerStatement | undefined): void { this.session.named.forgetDeallocated(name, statement); }
}
