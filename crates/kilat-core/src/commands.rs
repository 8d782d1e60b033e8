//! Command handlers of [`Session`]: one method per protocol method.
//!
//! Handlers return `Result<Reply, CoreError>`; [`Session::dispatch`] turns errors into error
//! replies through [`CoreError::to_client_error`]. `connect` and `subscribe` queue their own
//! replies, because live publications must follow the reply in the outbox.

use std::collections::BTreeMap;

use kilat_protocol::command::{
    ChannelRequest, ConnectRequest, HistoryRequest, PresenceRequest, PublishRequest,
    RefreshRequest, RpcRequest, SubRecovery, SubRefreshRequest, SubscribeRequest,
};
use kilat_protocol::reply::{
    ConnectResult, EmptyResult, PublishResult, RefreshResult, RpcResult, SubscribeResult,
};
use kilat_protocol::{
    ClientError, ClientInfo, Command, Disconnect, DisconnectCode, ErrorCode, Payload, Reply,
    SharedFrame,
};

use crate::auth::Credentials;
use crate::config::NamespaceOptions;
use crate::error::CoreError;
use crate::node::HistoryOptions;
use crate::permissions::{
    SubscribeAccess, check_history, check_presence, check_publish, check_subscribe, resolve,
};
use crate::proxy::{ConnectEvent, ConnectReply, Hook, PublishEvent, RpcEvent, SubscribeEvent};
use crate::recovery::Recovery;
use crate::session::{Session, State};
use crate::subscriptions::SubState;
use crate::time::{instant_from, ttl_from};
use crate::util::new_client_id;

/// A subscription joined and positioned, waiting for its reply to be queued.
#[derive(Debug)]
pub(crate) struct Joining {
    pub(crate) channel: String,
    pub(crate) result: SubscribeResult,
    pub(crate) state: SubState,
}

impl Session {
    pub(crate) fn info(&self) -> Result<ClientInfo, CoreError> {
        match &self.state {
            State::Connected(info) => Ok(info.clone()),
            State::Connecting(_) => Err(CoreError::Unauthorized("connect first".into())),
        }
    }

    /// Runs one command of a connected session and queues its reply; tells the observer, if
    /// any, how long it took and which error code it answered.
    pub(crate) async fn dispatch(&mut self, id: u32, command: Command) {
        let method = command.method();
        let started = self.node.observer().map(|_| tokio::time::Instant::now());
        let error = self.answer(id, command).await;
        if let (Some(observer), Some(started)) = (self.node.observer(), started) {
            observer.command(method, started.elapsed(), error);
        }
    }

    /// Runs one command and queues its reply; returns the error code it answered, if any.
    async fn answer(&mut self, id: u32, command: Command) -> Option<u32> {
        let result = match command {
            Command::Connect(_) => Err(CoreError::BadRequest("already connected".into())),
            Command::Subscribe(request) => match self.subscribe(id, request).await {
                Ok(()) => return None,
                Err(error) => Err(error),
            },
            Command::Unsubscribe(request) => self.unsubscribe(request).await,
            Command::Publish(request) => self.publish(request).await,
            Command::Presence(request) => self.presence(request).await,
            Command::PresenceStats(request) => self.presence_stats(request).await,
            Command::History(request) => self.history(request).await,
            Command::Rpc(request) => self.rpc(request).await,
            Command::Refresh(request) => self.refresh(request).await,
            Command::SubRefresh(request) => self.sub_refresh(request).await,
        };
        match result {
            Ok(reply) => {
                self.reply(id, &reply);
                None
            }
            Err(error) => {
                let error = error.to_client_error();
                self.reply_error(id, &error);
                Some(error.code)
            }
        }
    }

    /// `connect`: authenticates, registers the identity, subscribes to `subs` and replies.
    pub(crate) async fn connect(
        &mut self,
        id: u32,
        request: ConnectRequest,
    ) -> Result<(), Disconnect> {
        // Held to the end of this command; on success the client's first message after the reply
        // waits for a permit again (`Session::gate_first_message`).
        let handshake = self.take_handshake_permit();
        if matches!(self.state, State::Connected(_)) {
            self.reply_error(
                id,
                &ClientError::new(ErrorCode::BAD_REQUEST, "already connected"),
            );
            return Ok(());
        }
        if self.node.is_draining() {
            return Err(Disconnect::SHUTDOWN);
        }
        let client = new_client_id();
        let credentials = self.authenticate(id, &request, &client).await?;
        if !self.node.sessions().try_add_user(&credentials.user) {
            self.reply_error(
                id,
                &ClientError::new(
                    ErrorCode::LIMIT_EXCEEDED,
                    "too many connections for this user",
                ),
            );
            return Err(Disconnect::CONNECTION_LIMIT);
        }
        let info = ClientInfo {
            client,
            user: credentials.user,
            info: credentials.info,
        };
        self.node.sessions().set_identity(self.key, &info);
        let token = credentials.token_id.as_deref();
        self.node
            .sessions()
            .set_token(self.key, crate::revoke::token_hash(token));
        // Checked after the registry knows the token: a revocation arriving meanwhile either
        // finds this session there or is seen here.
        if self.node.is_revoked(&info.user, token) {
            self.reply_error(
                id,
                &ClientError::new(ErrorCode::UNAUTHORIZED, "token revoked"),
            );
            return Err(Disconnect::TOKEN_REVOKED);
        }
        self.state = State::Connected(info.clone());
        self.expires_at = credentials.expires_at.map(instant_from);
        let ping_interval = self.node.config().ping_interval;
        if !ping_interval.is_zero() {
            self.next_ping = tokio::time::Instant::now() + ping_interval;
        }

        let mut joining = Vec::new();
        let mut failed = Vec::new();
        let mut subs = request.subs.unwrap_or_default();
        for channel in &credentials.channels {
            // Token channels are positioned at the end unless the client sent a position.
            subs.entry(channel.clone()).or_insert(SubRecovery {
                recover: true,
                ..SubRecovery::default()
            });
        }
        for (channel, recovery) in subs {
            let request = SubscribeRequest {
                channel: channel.clone(),
                recover: recovery.recover,
                offset: recovery.offset,
                epoch: recovery.epoch,
                ..SubscribeRequest::default()
            };
            let granted = credentials.channels.contains(&channel);
            match self
                .prepare_subscribe(&request, joining.len(), granted)
                .await
            {
                Ok(join) => joining.push(join),
                Err(error) => failed.push((channel, error.to_client_error())),
            }
        }
        let subs: BTreeMap<String, SubscribeResult> = joining
            .iter()
            .map(|j| (j.channel.clone(), j.result.clone()))
            .collect();
        let result = ConnectResult {
            client: info.client.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ping: u32::try_from(ping_interval.as_secs()).unwrap_or(u32::MAX),
            expires: credentials.expires_at.map(|_| true),
            ttl: credentials.expires_at.map(ttl_from),
            subs: (!subs.is_empty()).then_some(subs),
            // The stream's secret, never the client id (which others see): see
            // `Session::set_emulation_key`.
            session: self
                .emulation_key
                .take()
                .filter(|_| self.transport.emulated)
                .map(String::from),
            node: self.transport.emulated.then(|| self.node.id().to_owned()),
        };
        self.reply(id, &Reply::Connect(result));
        for join in joining {
            self.finish_subscribe(join, None).await;
        }
        for (channel, error) in failed {
            self.outbox.push(crate::hub::unsubscribe_frame(
                &channel,
                error.code,
                error.message,
                false,
            ));
        }
        if let Some(permit) = handshake {
            self.gate_first_message(permit);
        }
        Ok(())
    }

    /// Checks the connect token (or asks the backend's connect hook when there is none, or
    /// allows anonymous access). On failure queues the error reply and returns the disconnect.
    async fn authenticate(
        &self,
        id: u32,
        request: &ConnectRequest,
        client: &str,
    ) -> Result<Credentials, Disconnect> {
        let token = request.token.as_deref();
        if token.is_none()
            && let Some(backend) = self.node.backend_for(Hook::Connect)
        {
            let event = ConnectEvent {
                client: client.to_owned(),
                transport: self.transport.name,
                name: request.name.clone(),
                version: request.version.clone(),
                data: request.data.clone(),
                headers: self.headers.clone(),
            };
            return match backend.connect(event).await {
                Ok(ConnectReply::Accept(credentials)) => Ok(credentials),
                Ok(ConnectReply::Disconnect(disconnect)) => Err(disconnect),
                Err(error) => {
                    self.reply_error(id, &error);
                    // A temporary failure (backend down) lets the client reconnect.
                    Err(if error.temporary {
                        Disconnect::new(DisconnectCode::FORCE_RECONNECT, error.message)
                    } else if error.code == ErrorCode::TOKEN_EXPIRED.0 {
                        Disconnect::new(DisconnectCode::TOKEN_EXPIRED, error.message)
                    } else {
                        Disconnect::new(DisconnectCode::UNAUTHORIZED, error.message)
                    })
                }
            };
        }
        let refused = |session: &Session, error: ClientError| {
            session.reply_error(id, &error);
            let code = if error.code == ErrorCode::TOKEN_EXPIRED.0 {
                DisconnectCode::TOKEN_EXPIRED
            } else {
                DisconnectCode::UNAUTHORIZED
            };
            Disconnect::new(code, error.message)
        };
        match (token, self.node.authenticator()) {
            (Some(token), Some(authenticator)) => authenticator
                .verify_connect(token)
                .await
                .map_err(|error| refused(self, error)),
            (Some(_), None) => Err(refused(
                self,
                ClientError::new(
                    ErrorCode::UNAUTHORIZED,
                    "token verification is not configured",
                ),
            )),
            (None, _) if self.node.config().anonymous_allowed() => Ok(Credentials::default()),
            (None, _) => Err(refused(
                self,
                ClientError::new(
                    ErrorCode::UNAUTHORIZED,
                    "anonymous connections are not allowed",
                ),
            )),
        }
    }

    async fn subscribe(&mut self, id: u32, request: SubscribeRequest) -> Result<(), CoreError> {
        let join = self.prepare_subscribe(&request, 0, false).await?;
        let frame = SharedFrame::reply(Reply::Subscribe(join.result.clone()).encode(id));
        self.finish_subscribe(join, Some(frame)).await;
        Ok(())
    }

    /// Checks and joins a channel: the subscriber is in the hub (holding live publications)
    /// and positioned, but no reply is queued yet. `pending` counts joins not finished yet;
    /// `granted` skips the permission checks (channels from the connection token).
    pub(crate) async fn prepare_subscribe(
        &mut self,
        request: &SubscribeRequest,
        pending: usize,
        granted: bool,
    ) -> Result<Joining, CoreError> {
        let info = self.info()?;
        let channel = request.channel.as_str();
        let ns = resolve(self.node.config(), channel)?;
        if let Some(state) = self.subs.get(channel) {
            if self.node.is_subscribed(channel, self.key) {
                return Err(CoreError::AlreadySubscribed);
            }
            // The hub dropped it (lost position, `unsubscribe` push sent): clean up, go again.
            self.subs.remove(channel);
            self.leave(channel, state).await;
        }
        if self.node.is_subscribed(channel, self.key) {
            return Err(CoreError::AlreadySubscribed);
        }
        if self.subs.len() + pending >= self.node.config().max_channels_per_connection {
            return Err(CoreError::LimitExceeded("too many channels"));
        }
        let access = if granted {
            SubscribeAccess::Allowed
        } else {
            check_subscribe(&ns, channel, &info.user, request.token.is_some())?
        };
        // The subscription token's expiry (Unix time), when one was verified.
        let token_expires = match access {
            SubscribeAccess::Allowed => None,
            SubscribeAccess::NeedsToken => {
                let (Some(token), Some(authenticator)) =
                    (request.token.as_deref(), self.node.authenticator())
                else {
                    return Err(CoreError::Unauthorized(
                        "token verification is not configured".into(),
                    ));
                };
                authenticator
                    .verify_subscribe(token, &info.user, channel)
                    .await
                    .map_err(CoreError::Client)?
                    .expires_at
            }
        };
        if ns.proxy_subscribe
            && !granted
            && let Some(backend) = self.node.backend_for(Hook::Subscribe)
        {
            let event = SubscribeEvent {
                client: info.client.clone(),
                user: info.user.clone(),
                channel: request.channel.clone(),
                data: request.data.clone(),
                headers: self.headers.clone(),
            };
            backend.subscribe(event).await.map_err(CoreError::Client)?;
        }
        let recovery = Recovery::from_params(
            request.recover,
            request.offset,
            request.epoch.clone(),
            ns.force_recovery,
        );
        let wants_join_leave = ns.join_leave && request.join_leave.unwrap_or(true);
        let delta = check_delta(request.delta.as_deref(), &ns)?;
        let prepared = self
            .node
            .prepare_subscribe(
                channel,
                self.key,
                &self.outbox,
                &ns,
                wants_join_leave,
                &recovery,
            )
            .await?;
        if delta {
            self.node.enable_delta(channel, self.key);
        }
        let mut result = prepared.result;
        result.delta = delta;
        if matches!(recovery, Recovery::From { .. })
            && let Some(observer) = self.node.observer()
        {
            observer.recovery(channel, result.recovered);
        }
        result.expires = token_expires.map(|_| true);
        result.ttl = token_expires.map(ttl_from);
        Ok(Joining {
            channel: request.channel.clone(),
            result,
            state: SubState {
                presence: ns.presence,
                join_leave: ns.join_leave,
                expires_at: token_expires.map(instant_from),
                refresh_sent: false,
            },
        })
    }

    /// Queues the reply (if any) and the held publications, then adds presence and the join.
    pub(crate) async fn finish_subscribe(&mut self, join: Joining, reply: Option<SharedFrame>) {
        if !self
            .node
            .go_live(&join.channel, self.key, reply, &join.result)
        {
            // Lost its position while joining: the client got an `unsubscribe` push.
            return;
        }
        let Ok(info) = self.info() else { return };
        self.node
            .after_join(&join.channel, self.key, &info, join.state)
            .await;
        self.subs.insert(join.channel, join.state);
    }

    /// Leaves a channel: hub, engine, presence, leave push. Never fails the caller.
    pub(crate) async fn leave(&self, channel: &str, state: SubState) {
        self.node.remove_subscriber(channel, self.key).await;
        let State::Connected(info) = &self.state else {
            return;
        };
        self.node.after_leave(channel, info, state).await;
    }

    async fn unsubscribe(&mut self, request: ChannelRequest) -> Result<Reply, CoreError> {
        kilat_protocol::validate_channel(&request.channel)?;
        if let Some(state) = self.subs.remove(&request.channel) {
            self.leave(&request.channel, state).await;
        }
        Ok(Reply::Unsubscribe(EmptyResult {}))
    }

    async fn publish(&mut self, mut request: PublishRequest) -> Result<Reply, CoreError> {
        let info = self.info()?;
        let ns = resolve(self.node.config(), &request.channel)?;
        let subscribed = self.node.is_subscribed(&request.channel, self.key);
        // Limits before allocation: base64 text decodes to about three quarters of its length.
        if request
            .b64data
            .as_ref()
            .is_some_and(|b64| b64.len() / 4 * 3 > ns.max_message_size + 2)
        {
            return Err(CoreError::TooLarge);
        }
        let payload = request
            .payload()
            .map_err(|error| CoreError::BadRequest(error.to_string().into()))?;
        // A binary payload counts with its decoded size.
        check_publish(&ns, &request.channel, &info.user, subscribed, payload.len())?;
        if !self.node.try_channel_publish(&request.channel) {
            return Err(CoreError::LimitExceeded(
                "channel publication rate exceeded",
            ));
        }
        let mut payload = payload;
        if ns.proxy_publish
            && let Some(backend) = self.node.backend_for(Hook::Publish)
        {
            let Payload::Json(data) = payload else {
                return Err(CoreError::BadRequest(
                    "binary data cannot go through this namespace's publish proxy (it speaks \
                     JSON); publish JSON data here"
                        .into(),
                ));
            };
            let event = PublishEvent {
                client: info.client.clone(),
                user: info.user.clone(),
                channel: request.channel.clone(),
                data,
                headers: self.headers.clone(),
            };
            let reply = backend
                .publish(event.clone())
                .await
                .map_err(CoreError::Client)?;
            let data = reply.data.unwrap_or(event.data);
            // The backend's replacement obeys the same size limit as the client's data.
            if data.get().len() > ns.max_message_size {
                return Err(CoreError::TooLarge);
            }
            payload = Payload::Json(data);
        }
        let position = self
            .node
            .publish_with(&request.channel, payload, Some(info), &ns)
            .await?;
        Ok(Reply::Publish(PublishResult {
            offset: position.map(|p| p.offset),
        }))
    }

    async fn presence(&mut self, request: PresenceRequest) -> Result<Reply, CoreError> {
        let info = self.info()?;
        let ns = resolve(self.node.config(), &request.channel)?;
        check_presence(&ns, &request.channel, &info.user)?;
        Ok(Reply::Presence(
            self.node
                .presence_page(&request.channel, request.cursor.as_deref(), request.limit)
                .await?,
        ))
    }

    async fn presence_stats(&mut self, request: ChannelRequest) -> Result<Reply, CoreError> {
        let info = self.info()?;
        let ns = resolve(self.node.config(), &request.channel)?;
        check_presence(&ns, &request.channel, &info.user)?;
        Ok(Reply::PresenceStats(
            self.node.presence_stats(&request.channel).await?,
        ))
    }

    async fn history(&mut self, request: HistoryRequest) -> Result<Reply, CoreError> {
        let info = self.info()?;
        let ns = resolve(self.node.config(), &request.channel)?;
        check_history(&ns, &request.channel, &info.user)?;
        let options = HistoryOptions {
            limit: request.limit.map(|l| l as usize),
            since: request.since,
            reverse: request.reverse,
        };
        let mut page = self
            .node
            .history_with(&request.channel, &ns, options)
            .await?;
        // A reply never needs more than the connection's queue (issue 20): the client pages on
        // with `since` when `more` is set.
        page.cut_to(self.node.config().client_queue_max_bytes / 2);
        Ok(Reply::History(page))
    }

    async fn rpc(&mut self, request: RpcRequest) -> Result<Reply, CoreError> {
        let info = self.info()?;
        let Some(backend) = self.node.backend_for(Hook::Rpc) else {
            return Err(CoreError::NotFound("no rpc handler is configured"));
        };
        let event = RpcEvent {
            client: info.client,
            user: info.user,
            method: request.method,
            data: request.data,
            headers: self.headers.clone(),
        };
        let reply = backend.rpc(event).await.map_err(CoreError::Client)?;
        Ok(Reply::Rpc(RpcResult { data: reply.data }))
    }

    async fn refresh(&mut self, request: RefreshRequest) -> Result<Reply, CoreError> {
        let info = self.info()?;
        let Some(authenticator) = self.node.authenticator() else {
            return Err(CoreError::Unauthorized(
                "token verification is not configured".into(),
            ));
        };
        let credentials = authenticator
            .verify_connect(&request.token)
            .await
            .map_err(CoreError::Client)?;
        if credentials.user != info.user {
            return Err(CoreError::Unauthorized("token is for another user".into()));
        }
        let token = credentials.token_id.as_deref();
        if self.node.is_revoked(&info.user, token) {
            return Err(CoreError::Unauthorized("token revoked".into()));
        }
        self.node
            .sessions()
            .set_token(self.key, crate::revoke::token_hash(token));
        self.expires_at = credentials.expires_at.map(instant_from);
        self.refresh_deadline = None;
        // A refresh hook still being asked no longer decides.
        self.backend_refresh = None;
        Ok(Reply::Refresh(refresh_result(&credentials)))
    }

    async fn sub_refresh(&mut self, request: SubRefreshRequest) -> Result<Reply, CoreError> {
        let info = self.info()?;
        if !self.subs.contains(&request.channel) {
            return Err(CoreError::NotFound("not subscribed to this channel"));
        }
        let Some(authenticator) = self.node.authenticator() else {
            return Err(CoreError::Unauthorized(
                "token verification is not configured".into(),
            ));
        };
        let credentials = authenticator
            .verify_subscribe(&request.token, &info.user, &request.channel)
            .await
            .map_err(CoreError::Client)?;
        // Unsubscribed while the token was checked: nothing to extend.
        let Some(state) = self.subs.get_mut(&request.channel) else {
            return Err(CoreError::NotFound("not subscribed to this channel"));
        };
        state.expires_at = credentials.expires_at.map(instant_from);
        state.refresh_sent = false;
        Ok(Reply::SubRefresh(refresh_result(&credentials)))
    }
}

fn refresh_result(credentials: &Credentials) -> RefreshResult {
    RefreshResult {
        expires: Some(credentials.expires_at.is_some()),
        ttl: credentials.expires_at.map(ttl_from),
    }
}

/// Whether a subscribe asked for deltas, and may have them: `"fossil"` is the one delta type,
/// and a delta needs the channel's offsets to know what each subscriber got last (history).
fn check_delta(delta: Option<&str>, ns: &NamespaceOptions) -> Result<bool, CoreError> {
    match delta {
        None => Ok(false),
        Some("fossil") if ns.has_history() => Ok(true),
        Some("fossil") => Err(CoreError::BadRequest(
            "delta needs a channel with history: set history_size and history_ttl in its namespace"
                .into(),
        )),
        Some(_) => Err(CoreError::BadRequest(
            "unknown delta type: the one supported is \"fossil\"".into(),
        )),
    }
}
